//! The bounded pieces that measure a run: each bot's ring of input send
//! times ([`RttRing`]), the windows round trips are filed under, the
//! histograms they go to, and failure tallies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::Percentiles;

/// Capacity of each bot's ring of input send times (6.4 s of inputs at 10 Hz).
pub const RTT_RING: usize = 64;
/// The window of the progress line's round trips.
pub const RTT_WINDOW: Duration = Duration::from_secs(5);
/// Most distinct reasons kept in a tally; the rest count under `other`.
const MAX_REASONS: usize = 32;
/// Longest reason text kept in a tally.
const MAX_REASON_CHARS: usize = 80;

/// The send times of a bot's recent inputs, oldest first, for the
/// input-to-visible round trip. Bounded: when full, the oldest entry is
/// forgotten (and counted as unacked).
#[derive(Debug)]
pub struct RttRing {
    sent: VecDeque<(u32, Instant)>,
    capacity: usize,
    unacked: u64,
}

impl RttRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            sent: VecDeque::with_capacity(capacity),
            capacity,
            unacked: 0,
        }
    }

    /// Input `seq` was sent at `at`. Sequence numbers must increase.
    pub fn sent(&mut self, seq: u32, at: Instant) {
        if self.sent.len() == self.capacity {
            self.sent.pop_front();
            self.unacked += 1;
        }
        self.sent.push_back((seq, at));
    }

    /// A packet with `ack` arrived at `at`: every input up to `ack` still in
    /// the ring becomes visible now; `sample` gets each round trip.
    pub fn acked(&mut self, ack: u32, at: Instant, mut sample: impl FnMut(Duration)) {
        while let Some(&(seq, sent)) = self.sent.front() {
            if seq > ack {
                break;
            }
            self.sent.pop_front();
            sample(at.saturating_duration_since(sent));
        }
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Inputs forgotten without an ack.
    pub fn unacked(&self) -> u64 {
        self.unacked
    }
}

/// The part of a run a round trip was taken in; each has its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum RttWindow {
    /// Bots are still logging in and entering.
    RampUp = 0,
    /// Between the ramp-up and the measured period.
    Warmup = 1,
    /// The measured period.
    Measured = 2,
    /// After the measured period: the bots are leaving (not recorded).
    After = 3,
}

/// The run's current [`RttWindow`], read by every bot without a lock.
pub(super) struct CurrentWindow(AtomicU8);

impl CurrentWindow {
    pub(super) fn new(window: RttWindow) -> Self {
        Self(AtomicU8::new(window as u8))
    }

    pub(super) fn get(&self) -> RttWindow {
        match self.0.load(Ordering::Relaxed) {
            0 => RttWindow::RampUp,
            1 => RttWindow::Warmup,
            2 => RttWindow::Measured,
            _ => RttWindow::After,
        }
    }

    pub(super) fn set(&self, window: RttWindow) {
        self.0.store(window as u8, Ordering::Relaxed);
    }
}

/// Round trips of the progress line: the current [`RTT_WINDOW`] fills while
/// the last full one is shown.
pub(super) struct RecentRtt {
    current: Histogram<u64>,
    since: Instant,
    /// The last full window's percentiles.
    last: Option<Percentiles>,
}

impl RecentRtt {
    pub(super) fn new() -> Self {
        Self {
            current: histogram_us(),
            since: Instant::now(),
            last: None,
        }
    }

    pub(super) fn record(&mut self, rtt: Duration) {
        record_us(&mut self.current, rtt);
    }

    /// The last full window's percentiles, starting a new window when the
    /// current one is full.
    pub(super) fn last_full(&mut self) -> Option<Percentiles> {
        if self.since.elapsed() >= RTT_WINDOW {
            self.last = (!self.current.is_empty()).then(|| Percentiles::of_us(&self.current));
            self.current.reset();
            self.since = Instant::now();
        }
        self.last
    }
}

/// Microseconds, 1 µs .. 10 min, 3 significant figures.
pub(super) fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

pub(super) fn record_us(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Counts by reason, at most [`MAX_REASONS`] distinct ones (the rest under
/// `other`), reasons cut to [`MAX_REASON_CHARS`] — server-sent text must not
/// grow it without bound.
#[derive(Debug, Default)]
pub(super) struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub(super) fn add(&mut self, reason: &str) {
        self.add_n(reason, 1);
    }

    pub(super) fn add_n(&mut self, reason: &str, n: u64) {
        let mut reason = reason_key(reason);
        if !self.0.contains_key(&reason) && self.0.len() >= MAX_REASONS {
            reason = "other".to_owned();
        }
        *self.0.entry(reason).or_insert(0) += n;
    }

    /// The counts, by reason.
    pub(super) fn counts(&self) -> &BTreeMap<String, u64> {
        &self.0
    }
}

/// A reason as a tally key: control characters gone, cut to
/// [`MAX_REASON_CHARS`], and numbers (ids, addresses, times) as `N`, so one
/// cause is one key.
fn reason_key(reason: &str) -> String {
    let mut key = String::new();
    let mut in_number = false;
    for c in reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
    {
        let digit = c.is_ascii_digit();
        if !(digit && in_number) {
            key.push(if digit { 'N' } else { c });
        }
        in_number = digit;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_ring_samples_each_input_once_when_first_acked() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut ring = RttRing::new(8);
        ring.sent(1, t0);
        ring.sent(2, t0 + ms(100));
        ring.sent(3, t0 + ms(200));
        let mut got = Vec::new();
        ring.acked(0, t0 + ms(50), |d| got.push(d));
        assert!(got.is_empty(), "ack 0 covers nothing");
        ring.acked(2, t0 + ms(250), |d| got.push(d));
        assert_eq!(got, vec![ms(250), ms(150)]);
        // A later packet with the same ack samples nothing again.
        ring.acked(2, t0 + ms(300), |d| got.push(d));
        assert_eq!(got.len(), 2);
        ring.acked(9, t0 + ms(330), |d| got.push(d));
        assert_eq!(got, vec![ms(250), ms(150), ms(130)]);
        assert!(ring.is_empty());
        assert_eq!(ring.unacked(), 0);
    }

    #[test]
    fn rtt_ring_is_bounded_and_counts_what_it_forgets() {
        let t0 = Instant::now();
        let mut ring = RttRing::new(4);
        for seq in 1..=10 {
            ring.sent(seq, t0);
        }
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.unacked(), 6);
        let mut n = 0;
        ring.acked(10, t0, |_| n += 1);
        assert_eq!(n, 4);
        // A time before the send (clock oddities) is zero, not a panic.
        ring.sent(11, t0 + Duration::from_secs(1));
        ring.acked(11, t0, |d| assert_eq!(d, Duration::ZERO));
    }

    #[test]
    fn current_window_reads_back_what_was_set() {
        let window = CurrentWindow::new(RttWindow::RampUp);
        assert_eq!(window.get(), RttWindow::RampUp);
        for w in [
            RttWindow::Warmup,
            RttWindow::Measured,
            RttWindow::After,
            RttWindow::RampUp,
        ] {
            window.set(w);
            assert_eq!(window.get(), w);
        }
    }

    #[test]
    fn tally_is_bounded() {
        let mut t = Tally::default();
        for i in 0..100u8 {
            let word: String = [b'a' + i % 26, b'a' + i / 26]
                .iter()
                .map(|&b| char::from(b))
                .collect();
            t.add(&format!("reason {word} {}", "x".repeat(500)));
        }
        assert_eq!(t.0.len(), MAX_REASONS + 1);
        assert_eq!(t.0.get("other"), Some(&(100 - MAX_REASONS as u64)));
        assert!(t.0.keys().all(|k| k.chars().count() <= MAX_REASON_CHARS));
        let mut t = Tally::default();
        t.add("gate error: refused: no avatar 12");
        t.add("gate error: refused: no avatar 345");
        t.add("kicked: bad\u{7}bell");
        assert_eq!(t.0.get("gate error: refused: no avatar N"), Some(&2));
        assert_eq!(t.0.get("kicked: badbell"), Some(&1));
    }
}
