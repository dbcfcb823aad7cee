//! A token bucket that reads no clock of its own: each call gives `now`,
//! so tests drive it with made-up instants. For the gate's many small
//! limits (per source, per session), where a `governor` limiter per key
//! would carry more than the two numbers needed.

use std::time::Instant;

/// `tokens` left as of `last`; refilled at a rate given on each call, up
/// to a burst given on each call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Refills for the time since the last call, at `rate` per second up
    /// to `burst`; returns the tokens held.
    pub(crate) fn refill(&mut self, now: Instant, rate: f64, burst: f64) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
        self.tokens
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        if self.refill(now, rate, burst) >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
