//! [`Registry`]: the metric sources and health checks of one process.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::Exposition;

/// A health check's answer: `Err` carries a short reason for the operator.
pub type Check = Result<(), String>;

/// One role's metrics and health (the coordinator, a scene server, a gate).
///
/// `collect` runs on the scraping thread: it reads counters (atomics, or
/// state behind a lock the role's own loops hold only briefly) and must
/// never make a scene thread wait.
pub trait Source: Send + Sync {
    /// Writes this role's samples.
    fn collect(&self, out: &mut Exposition);

    /// Whether the role's loops are alive (`/livez`). Default: yes.
    fn live(&self) -> Check {
        Ok(())
    }

    /// Whether the role can do its work (`/readyz`). Default: yes. May do
    /// a little blocking I/O (a database read): callers run it off the
    /// async threads.
    fn ready(&self) -> Check {
        Ok(())
    }
}

/// The sources of one process. Cheap to clone (shared); holds each source
/// weakly, so a role that stops drops out of the next scrape.
#[derive(Clone, Default)]
pub struct Registry {
    sources: Arc<Mutex<Vec<Weak<dyn Source>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources().len())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source for as long as it lives (this holds it weakly).
    pub fn register(&self, source: &Arc<dyn Source>) {
        self.lock().push(Arc::downgrade(source));
    }

    /// The live sources, in registration order (the dead are forgotten).
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        let mut sources = self.lock();
        sources.retain(|w| w.strong_count() > 0);
        sources.iter().filter_map(Weak::upgrade).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Source>>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every source's samples, in the text format.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        for s in self.sources() {
            s.collect(&mut out);
        }
        out.render()
    }

    /// `Ok` when every source is alive, else every reason, `; `-separated.
    pub fn live(&self) -> Check {
        join(self.sources().iter().map(|s| s.live()))
    }

    /// `Ok` when every source is ready, else every reason, `; `-separated.
    pub fn ready(&self) -> Check {
        join(self.sources().iter().map(|s| s.ready()))
    }
}

fn join(checks: impl Iterator<Item = Check>) -> Check {
    let reasons: Vec<String> = checks.filter_map(Result::err).collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        name: &'static str,
        value: u64,
        live: bool,
    }

    impl Source for Fixed {
        fn collect(&self, out: &mut Exposition) {
            out.counter(
                "t_things_total",
                "Things.",
                &[("role", self.name)],
                self.value,
            );
        }
        fn live(&self) -> Check {
            if self.live {
                Ok(())
            } else {
                Err(format!("{} stopped", self.name))
            }
        }
    }

    #[test]
    fn every_live_source_is_rendered_and_checked_until_it_is_dropped() {
        let r = Registry::new();
        let a = Arc::new(Fixed {
            name: "a",
            value: 1,
            live: true,
        });
        let b = Arc::new(Fixed {
            name: "b",
            value: 2,
            live: false,
        });
        r.register(&(Arc::clone(&a) as Arc<dyn Source>));
        r.register(&(Arc::clone(&b) as Arc<dyn Source>));
        assert_eq!(
            r.render(),
            "# HELP t_things_total Things.\n# TYPE t_things_total counter\n\
             t_things_total{role=\"a\"} 1\nt_things_total{role=\"b\"} 2\n"
        );
        assert_eq!(r.live(), Err("b stopped".into()));
        assert_eq!(r.ready(), Ok(()));
        drop(b);
        assert_eq!(r.live(), Ok(()));
        assert!(!r.render().contains("role=\"b\""));
    }
}
