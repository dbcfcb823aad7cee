//! [`Histogram`]: fixed buckets over relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram with fixed bucket bounds, observed from any thread without
/// a lock or an allocation: an observation is two relaxed `fetch_add`s and
/// a search of the bounds.
///
/// Values are integers in the histogram's own unit (nanoseconds for
/// [`Histogram::seconds`]); `per_base` of them make the exposed base unit. A scrape reads the buckets one by one, so it may see an
/// observation in one bucket and not yet in the sum: Prometheus takes that
/// in its stride, and the count is always the sum of the buckets.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive), ascending, in the histogram's unit.
    bounds: Box<[u64]>,
    /// One more than `bounds`: the last counts what is above every bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    per_base: f64,
}

impl Histogram {
    /// `bounds` in the histogram's unit (sorted and deduplicated here);
    /// `per_base` units make one base unit (1 for counts, 1e9 for
    /// nanoseconds shown as seconds: dividing keeps `0.001` exact).
    pub fn new(bounds: &[u64], per_base: f64) -> Self {
        let mut bounds = bounds.to_vec();
        bounds.sort_unstable();
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds: bounds.into_boxed_slice(),
            counts,
            sum: AtomicU64::new(0),
            per_base,
        }
    }

    /// A histogram of durations: `bounds` in seconds, observations in
    /// nanoseconds ([`Histogram::observe_duration`], [`Histogram::observe`]).
    pub fn seconds(bounds: &[f64]) -> Self {
        let ns: Vec<u64> = bounds.iter().map(|s| (s * 1e9).round() as u64).collect();
        Self::new(&ns, 1e9)
    }

    /// Counts `v` (in the histogram's unit).
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Counts a duration, in nanoseconds (saturating).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A copy for a scrape.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.counts.len());
        let mut total = 0u64;
        for c in self.counts.iter() {
            total = total.saturating_add(c.load(Ordering::Relaxed));
            cumulative.push(total);
        }
        HistogramSnapshot {
            bounds: self
                .bounds
                .iter()
                .map(|&b| b as f64 / self.per_base)
                .collect(),
            cumulative,
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.per_base,
        }
    }
}

/// A [`Histogram`] as a scrape saw it, in base units.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: Vec<f64>,
    /// Cumulative counts, one per bound and the last for `+Inf`.
    cumulative: Vec<u64>,
    sum: f64,
}

impl HistogramSnapshot {
    /// `(upper bound, cumulative count)`, ending with `(+Inf, count)`.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.cumulative.iter().copied())
    }

    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::new(&[10, 20], 1.0);
        for v in [0, 10, 11, 20, 21, u64::MAX] {
            h.observe(v);
        }
        let s = h.snapshot();
        let b: Vec<_> = s.buckets().collect();
        assert_eq!(b, vec![(10.0, 2), (20.0, 4), (f64::INFINITY, 6)]);
        assert_eq!(s.count(), 6);
    }

    #[test]
    fn seconds_are_observed_in_nanoseconds_and_shown_in_seconds() {
        let h = Histogram::seconds(&[0.05, 0.001, 0.05]);
        h.observe_duration(Duration::from_micros(500));
        h.observe_duration(Duration::from_millis(50));
        h.observe_duration(Duration::from_secs(2));
        let s = h.snapshot();
        let b: Vec<_> = s.buckets().collect();
        assert_eq!(b, vec![(0.001, 1), (0.05, 2), (f64::INFINITY, 3)]);
        assert!((s.sum() - 2.0505).abs() < 1e-9, "{}", s.sum());
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(&[5], 1.0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        h.observe((i + t) % 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread");
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 4000);
        assert_eq!(s.buckets().next(), Some((5.0, 2400)));
    }
}
