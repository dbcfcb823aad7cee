//! # tessera-metrics — Prometheus metrics and health checks
//!
//! * [`Exposition`]: the text exposition format (version 0.0.4) written by
//!   hand: counters, gauges and histograms, labels escaped per the format,
//!   the samples of one metric grouped under one `# HELP` and `# TYPE`
//!   whichever source wrote them.
//! * [`Histogram`]: fixed buckets over relaxed atomics, so observing never
//!   allocates nor locks (the tick path observes every tick).
//! * [`Registry`]: the [`Source`]s of one process (a role each; all of them
//!   under `tessera up`), rendered on scrape, and their liveness and
//!   readiness checks.
//! * `http` (feature `http`): `/metrics`, `/livez` and `/readyz` over axum.
//!
//! **API Boundary.** Without the `http` feature this crate does no I/O and
//! knows no Tessera type: roles implement [`Source`] for their own counters.
//! Metric names are `&'static str` constants of the roles, documented in
//! `docs/metrics.md`.

mod histogram;
mod registry;
mod text;

#[cfg(feature = "http")]
pub mod http;

pub use histogram::{Histogram, HistogramSnapshot};
pub use registry::{Check, Registry, Source};
pub use text::{CONTENT_TYPE, Exposition, Kind, read_sample};
