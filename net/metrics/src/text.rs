//! The Prometheus text exposition format, version 0.0.4.
//!
//! ```text
//! # HELP tessera_gate_clients Clients connected to the gate.
//! # TYPE tessera_gate_clients gauge
//! tessera_gate_clients{gate="gate-1"} 3
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::HistogramSnapshot;

/// The `Content-Type` of an [`Exposition`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process or the object it counts
    /// restarts); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into fixed buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// The rendered sample lines.
    samples: String,
}

/// One scrape's worth of metrics. Sources write samples in any order; the
/// samples of a family come out together, under its `# HELP` and `# TYPE`,
/// families in the order first written.
///
/// A name that is not a valid metric name, a counter whose name does not
/// end in `_total`, a family written again with another type, or a bad
/// label name is a bug of the caller: it fails a debug assertion and the
/// sample is left out in release builds (a scrape never panics).
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
    by_name: BTreeMap<&'static str, usize>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter sample. `name` ends in `_total`.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        if let Some(out) = self.family(name, help, Kind::Counter, labels) {
            sample(out, name, "", labels, None);
            let _ = writeln!(out, " {value}");
        }
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if let Some(out) = self.family(name, help, Kind::Gauge, labels) {
            sample(out, name, "", labels, None);
            out.push(' ');
            push_float(out, value);
            out.push('\n');
        }
    }

    /// A histogram's buckets (cumulative, `+Inf` last), sum and count.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) {
        let Some(out) = self.family(name, help, Kind::Histogram, labels) else {
            return;
        };
        let mut le = String::new();
        for (bound, count) in h.buckets() {
            le.clear();
            push_float(&mut le, bound);
            sample(out, name, "_bucket", labels, Some(&le));
            let _ = writeln!(out, " {count}");
        }
        sample(out, name, "_sum", labels, None);
        out.push(' ');
        push_float(out, h.sum());
        out.push('\n');
        sample(out, name, "_count", labels, None);
        let _ = writeln!(out, " {}", h.count());
    }

    /// The text to serve.
    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.families.iter().map(|f| f.samples.len() + 128).sum());
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(f.name);
            out.push(' ');
            escape_help(&mut out, f.help);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            out.push_str(&f.samples);
        }
        out
    }

    /// The sample buffer of `name`, created on first use; `None` (after a
    /// debug assertion) when the name, type or labels are wrong.
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Option<&mut String> {
        let labels_ok = labels
            .iter()
            .all(|(l, _)| valid_label_name(l) && !(kind == Kind::Histogram && *l == "le"));
        debug_assert!(labels_ok, "{name}: bad label name in {labels:?}");
        if !labels_ok {
            return None;
        }
        let i = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let ok =
                    valid_metric_name(name) && (kind == Kind::Counter) == name.ends_with("_total");
                debug_assert!(ok, "{name} is not a valid {} name", kind.name());
                if !ok {
                    return None;
                }
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: String::new(),
                });
                self.by_name.insert(name, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let f = &mut self.families[i];
        debug_assert_eq!(f.kind, kind, "{name} written as two types");
        (f.kind == kind).then_some(&mut f.samples)
    }
}

/// `name{labels}` (with `le` last when given), no value.
fn sample(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
    out.push('}');
}

/// A float as the format has it: `+Inf`, `-Inf`, `NaN`, else Rust's
/// shortest round-trip form (never an exponent).
fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A label value: `\`, `"` and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text: `\` and newline escaped.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value of one sample in an exposition text: `series` is the metric's
/// name with its labels exactly as written (`name{a="x",b="y"}`, or just
/// `name`). For tests and tools reading a scrape; `None` when absent or not
/// a number.
pub fn read_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        // A sample may carry a timestamp after its value.
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Histogram;

    #[test]
    fn samples_of_a_family_are_grouped_under_one_header() {
        let mut e = Exposition::new();
        e.counter("t_a_total", "A things.", &[("scene", "x")], 1);
        e.gauge("t_b", "B.", &[], 2.5);
        e.counter("t_a_total", "A things.", &[("scene", "y")], 2);
        assert_eq!(
            e.render(),
            "# HELP t_a_total A things.\n# TYPE t_a_total counter\n\
             t_a_total{scene=\"x\"} 1\nt_a_total{scene=\"y\"} 2\n\
             # HELP t_b B.\n# TYPE t_b gauge\nt_b 2.5\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("t_g", "a \\ b\nc", &[("name", "q\"u\\o\nte")], 1.0);
        assert_eq!(
            e.render(),
            "# HELP t_g a \\\\ b\\nc\n# TYPE t_g gauge\nt_g{name=\"q\\\"u\\\\o\\nte\"} 1\n"
        );
    }

    #[test]
    fn special_floats_are_spelt_as_the_format_has_them() {
        let mut s = String::new();
        for v in [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.000_05,
            1e21,
            -3.0,
        ] {
            push_float(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "+Inf -Inf NaN 0.00005 1000000000000000000000 -3 ");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&[1, 5], 1.0);
        for v in [0, 1, 3, 7, 9] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.histogram("t_h", "H.", &[("scene", "s")], &h.snapshot());
        assert_eq!(
            e.render(),
            "# HELP t_h H.\n# TYPE t_h histogram\n\
             t_h_bucket{scene=\"s\",le=\"1\"} 2\n\
             t_h_bucket{scene=\"s\",le=\"5\"} 3\n\
             t_h_bucket{scene=\"s\",le=\"+Inf\"} 5\n\
             t_h_sum{scene=\"s\"} 20\n\
             t_h_count{scene=\"s\"} 5\n"
        );
    }

    #[test]
    fn a_sample_is_found_by_its_exact_series() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"12\"} 5 1700000000\nx_total 7\n";
        assert_eq!(read_sample(text, "x_total{a=\"1\"}"), Some(3.0));
        assert_eq!(read_sample(text, "x_total{a=\"12\"}"), Some(5.0));
        assert_eq!(read_sample(text, "x_total"), Some(7.0));
        assert_eq!(read_sample(text, "x_tot"), None);
        assert_eq!(read_sample(text, "x_total{a=\"2\"}"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_metric_name("tessera_x:y_1"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("scene"));
        assert!(!valid_label_name("__name"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not a valid counter name")]
    fn a_counter_without_total_fails_in_debug_builds() {
        Exposition::new().counter("t_count", "C.", &[], 1);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn a_counter_without_total_is_left_out_in_release_builds() {
        let mut e = Exposition::new();
        e.counter("t_count", "C.", &[], 1);
        e.gauge("t_a", "A.", &[("le", "x")], 1.0);
        assert_eq!(
            e.render(),
            "# HELP t_a A.\n# TYPE t_a gauge\nt_a{le=\"x\"} 1\n"
        );
    }
}
