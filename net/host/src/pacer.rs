//! The fixed-step schedule of one scene, as pure arithmetic over a clock
//! reading: tick `k` is due at `start + k / hz` seconds. Deadlines are
//! computed from the start instant, never from "now + period", so a scene
//! never drifts however late its wake-ups are.

use std::time::Duration;

const NANOS: u128 = 1_000_000_000;

/// What to do at one wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Ticks to run now, back to back (at most the burst limit).
    pub run: u32,
    /// Due ticks beyond the burst limit, given up (the schedule jumps past them).
    pub skipped: u64,
}

/// Counters of the schedule, since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacerStats {
    /// Ticks handed out to run.
    pub ticks: u64,
    /// Ticks that were already a full period overdue when the scene woke up:
    /// each was then either caught up or skipped.
    ///
    /// **Invariant:** `late == caught_up + skipped`.
    pub late: u64,
    /// Late ticks run in a catch-up burst.
    pub caught_up: u64,
    /// Late ticks given up because the burst limit was reached.
    pub skipped: u64,
    /// Wake-ups at which more than one tick was due.
    pub late_wakeups: u64,
}

/// A fixed-step schedule. Pure: the caller passes the clock reading.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Duration,
    hz: u32,
    max_burst: u32,
    /// Schedule index of the next tick to hand out.
    next: u64,
    stats: PacerStats,
}

impl Pacer {
    /// A schedule of `hz` ticks per second whose tick 0 is due at `start`.
    /// `max_burst` (at least 1) bounds the ticks run at one wake-up.
    pub fn new(start: Duration, hz: u32, max_burst: u32) -> Self {
        Self {
            start,
            hz: hz.max(1),
            max_burst: max_burst.max(1),
            next: 0,
            stats: PacerStats::default(),
        }
    }

    /// When schedule slot `k` is due.
    pub fn due(&self, k: u64) -> Duration {
        let offset = u128::from(k) * NANOS / u128::from(self.hz);
        self.start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// When the next tick is due: the time to sleep until.
    pub fn next_deadline(&self) -> Duration {
        self.due(self.next)
    }

    /// Schedule index of the next tick.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// How many slots are due at `now` (slot `k` is due once `now ≥ due(k)`).
    fn due_by(&self, now: Duration) -> u64 {
        let Some(elapsed) = now.checked_sub(self.start) else {
            return 0;
        };
        let slots = elapsed.as_nanos() * u128::from(self.hz) / NANOS + 1;
        u64::try_from(slots).unwrap_or(u64::MAX)
    }

    /// The plan for a wake-up at `now`: run what is due, up to the burst
    /// limit, skip the rest. Advances the schedule past every due slot.
    pub fn poll(&mut self, now: Duration) -> Plan {
        let due = self.due_by(now).saturating_sub(self.next);
        if due == 0 {
            return Plan::default();
        }
        let run = due.min(u64::from(self.max_burst));
        let skipped = due - run;
        self.next += due;
        self.stats.ticks += run;
        if due > 1 {
            self.stats.late_wakeups += 1;
            self.stats.late += due - 1;
            self.stats.caught_up += run - 1;
            self.stats.skipped += skipped;
        }
        Plan {
            run: u32::try_from(run).unwrap_or(u32::MAX),
            skipped,
        }
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn host_pacer_runs_one_tick_per_period_without_drift() {
        let start = Duration::from_secs(7);
        let mut p = Pacer::new(start, 20, 4);
        assert_eq!(p.poll(start - MS), Plan::default(), "nothing before start");
        // Every wake-up is 49 ms late: a schedule built from "now + period"
        // would have drifted by 49 s after 1000 ticks.
        for k in 0..1000u64 {
            let now = start + 50 * MS * k as u32 + 49 * MS;
            assert_eq!(p.next_deadline(), start + 50 * MS * k as u32);
            assert_eq!(p.poll(now), Plan { run: 1, skipped: 0 }, "tick {k}");
            assert_eq!(p.poll(now), Plan::default(), "tick {k} ran once");
        }
        assert_eq!(p.next_deadline(), start + Duration::from_secs(50));
        let s = p.stats();
        assert_eq!((s.ticks, s.late, s.caught_up, s.skipped), (1000, 0, 0, 0));
    }

    #[test]
    fn host_pacer_catches_up_to_the_burst_then_skips_and_counts() {
        let mut p = Pacer::new(Duration::ZERO, 20, 3);
        for k in 0..10u32 {
            assert_eq!(p.poll(50 * MS * k).run, 1);
        }
        // Tick 10 was due at 500 ms; a stall of 5 periods: woken at 750 ms,
        // slots 10..=15 are due (6 slots, 5 of them a full period late).
        let plan = p.poll(750 * MS);
        assert_eq!(plan, Plan { run: 3, skipped: 3 });
        let s = p.stats();
        assert_eq!(
            (s.ticks, s.late, s.caught_up, s.skipped, s.late_wakeups),
            (13, 5, 2, 3, 1)
        );
        assert_eq!(s.late, s.caught_up + s.skipped);
        // Back on the original grid: the next tick is due at 800 ms.
        assert_eq!(p.next_deadline(), 800 * MS);
        assert_eq!(p.poll(799 * MS), Plan::default());
        assert_eq!(p.poll(800 * MS), Plan { run: 1, skipped: 0 });
    }

    #[test]
    fn host_pacer_is_exact_at_rates_that_do_not_divide_a_second() {
        let mut p = Pacer::new(Duration::ZERO, 60, 1);
        assert_eq!(p.due(60), Duration::from_secs(1));
        assert_eq!(p.due(3 * 60 * 60 * 60), Duration::from_secs(3 * 3600));
        // A single wake-up after an hour with burst 1: one tick, the rest skipped.
        let plan = p.poll(Duration::from_secs(3600));
        assert_eq!(
            plan,
            Plan {
                run: 1,
                skipped: 216_000
            }
        );
        assert_eq!(p.next_index(), 216_001);
    }
}
