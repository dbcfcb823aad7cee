//! Shared helpers for reports: histogram summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Mean, median, p99 and max of a nanosecond histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MsSummary {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl MsSummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |ns: f64| (ns / 1e6 * 1000.0).round() / 1000.0;
        Self {
            mean: ms(h.mean()),
            p50: ms(h.value_at_quantile(0.5) as f64),
            p99: ms(h.value_at_quantile(0.99) as f64),
            max: ms(h.max() as f64),
        }
    }
}

pub use tessera_sim::metrics::histogram as new_histogram;
