//! [`SharedCore`]: the [`Core`] behind its one mutex, and how long each
//! holder keeps it. Every acquisition goes through [`SharedCore::lock`],
//! whose guard records its hold time when it drops
//! (`tessera_coordinator_lock_hold_seconds`): nothing else waits on a
//! holder, so this is the figure that bounds the coordinator's latency.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tessera_link::lock;
use tessera_metrics::Histogram;

use super::Core;

/// Bounds of the hold-time histogram, seconds: handlers take microseconds,
/// anything past a millisecond is worth seeing.
const HOLD_BOUNDS: [f64; 16] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05,
    0.25, 1.0,
];

/// The core and its lock's hold-time histogram.
pub(crate) struct SharedCore {
    core: Mutex<Core>,
    hold: Histogram,
}

impl SharedCore {
    pub(crate) fn new(core: Core) -> Self {
        Self {
            core: Mutex::new(core),
            hold: Histogram::seconds(&HOLD_BOUNDS),
        }
    }

    /// Takes the lock (recovering it from a holder that panicked); the
    /// guard records how long it was held when it drops.
    pub(crate) fn lock(&self) -> CoreGuard<'_> {
        let guard = lock(&self.core);
        CoreGuard {
            guard,
            since: Instant::now(),
            hold: &self.hold,
        }
    }

    /// How long the lock was held, per acquisition.
    pub(crate) fn hold_times(&self) -> &Histogram {
        &self.hold
    }
}

/// The core, locked. Keep it for as short a time as possible: never across
/// disk I/O or an `.await`.
pub(crate) struct CoreGuard<'a> {
    guard: MutexGuard<'a, Core>,
    since: Instant,
    hold: &'a Histogram,
}

impl Deref for CoreGuard<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        // Observed while still held: the figure includes this atomic add,
        // never a wait of the next holder.
        self.hold.observe_duration(self.since.elapsed());
    }
}
