//! The time source of scene runners. Production uses [`SystemClock`]
//! (monotonic [`Instant`]); tests use [`ManualClock`], whose time moves only
//! when the test says so, so schedules are exact and tests never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic time source for scene runners.
pub trait Clock: Send + Sync + 'static {
    /// Time since the clock's origin. Never goes backwards.
    fn now(&self) -> Duration;

    /// How long a runner may block on its command queue before it must look
    /// at the clock again, when its next tick is due at `deadline`.
    fn max_wait(&self, deadline: Duration) -> Duration;
}

/// Real monotonic time.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn max_wait(&self, deadline: Duration) -> Duration {
        deadline.saturating_sub(self.now())
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// A runner waiting on it re-reads it every [`ManualClock::POLL`] of real time
/// (the runner cannot be woken by [`ManualClock::advance`] otherwise); time
/// itself advances only in [`ManualClock::advance`] / [`ManualClock::set`].
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Real time between two looks at a manual clock by a waiting runner.
    pub const POLL: Duration = Duration::from_millis(1);

    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `d`, in one step.
    pub fn advance(&self, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(d, Ordering::SeqCst);
    }

    /// Sets the time; it never moves backwards (an earlier value is ignored).
    pub fn set(&self, t: Duration) {
        let t = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn max_wait(&self, deadline: Duration) -> Duration {
        if self.now() >= deadline {
            Duration::ZERO
        } else {
            Self::POLL
        }
    }
}
