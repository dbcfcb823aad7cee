//! The coordinator as a metrics [`Source`]: logins by outcome and the
//! password-hash latency (counted by the HTTP API), the login queue, the
//! cluster's placements, epochs and failovers, the write-behind writer, and
//! the links; alive while its ticker runs, ready while the database answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_link::LinkStats;
use tessera_metrics::{Check, Exposition, Histogram, Source};
use tessera_persistence::CommitReport;

use crate::core::SharedCore;

/// Every outcome a login can have: `ok` and `queued`, else the error code
/// of its answer. Anything else is counted as `other`.
pub(crate) const LOGIN_OUTCOMES: [&str; 13] = [
    "ok",
    "queued",
    "invalid",
    "too_large",
    "upgrade_required",
    "protocol_mismatch",
    "bad_credentials",
    "locked",
    "rate_limited",
    "no_gate",
    "queue_full",
    "unavailable",
    "internal",
];

/// The coordinator is not live when its ticker has not run for this long
/// (or three tick periods, if longer).
const TICKER_STALL: Duration = Duration::from_secs(5);

/// Figures the HTTP API, the writer thread and the ticker write as they go.
#[derive(Debug)]
pub(crate) struct Counters {
    logins: [AtomicU64; LOGIN_OUTCOMES.len() + 1],
    /// Admin requests refused for a missing or wrong token.
    admin_unauthorized: AtomicU64,
    pub(crate) password_hash: Histogram,
    commit_time: Histogram,
    commit_states: Histogram,
    commit_batches: Histogram,
    origin: Instant,
    /// Time of the ticker's last run, ms since `origin`.
    ticked_ms: AtomicU64,
    /// Silence of the ticker beyond which the coordinator is not live.
    stall: Duration,
}

impl Counters {
    /// Counters of a coordinator whose cluster ticker runs every `tick`.
    pub(crate) fn new(tick: Duration) -> Self {
        Self {
            logins: std::array::from_fn(|_| AtomicU64::new(0)),
            admin_unauthorized: AtomicU64::new(0),
            password_hash: Histogram::seconds(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            commit_time: Histogram::seconds(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            commit_states: Histogram::new(
                &[1, 5, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000],
                1.0,
            ),
            commit_batches: Histogram::new(&[1, 2, 4, 8, 16, 32, 64], 1.0),
            origin: Instant::now(),
            ticked_ms: AtomicU64::new(0),
            stall: TICKER_STALL.max(tick * 3),
        }
    }

    /// Counts one login answer by its outcome.
    pub(crate) fn login(&self, outcome: &str) {
        let i = LOGIN_OUTCOMES
            .iter()
            .position(|&o| o == outcome)
            .unwrap_or(LOGIN_OUTCOMES.len());
        self.logins[i].fetch_add(1, Ordering::Relaxed);
    }

    /// An admin request came without the admin token.
    pub(crate) fn admin_unauthorized(&self) {
        self.admin_unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// One durable commit of the writer (on its thread).
    pub(crate) fn commit(&self, r: &CommitReport) {
        self.commit_time.observe_duration(r.commit_time);
        self.commit_states.observe(r.states as u64);
        self.commit_batches.observe(r.batches);
    }

    /// Liveness at `now_ms` (since `origin`): the ticker ran lately.
    fn live_at(&self, now_ms: u64) -> Check {
        let idle = now_ms.saturating_sub(self.ticked_ms.load(Ordering::Relaxed));
        if idle > self.stall.as_millis() as u64 {
            Err(format!(
                "coordinator: cluster ticker has not run for {:.1} s",
                idle as f64 / 1000.0
            ))
        } else {
            Ok(())
        }
    }

    /// The ticker ran.
    pub(crate) fn ticked(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ticked_ms.store(ms, Ordering::Relaxed);
    }
}

/// What a scrape of the coordinator reads.
pub(crate) struct CoordinatorMetrics {
    pub(crate) core: Arc<SharedCore>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) links: Arc<LinkStats>,
}

impl Source for CoordinatorMetrics {
    fn collect(&self, out: &mut Exposition) {
        // Copied under the lock, written after it.
        let (stats, status, writer, (logins, resume_keys), waiting) = {
            let core = self.core.lock();
            (
                core.stats(),
                core.status(),
                core.writer_stats(),
                core.login_counts(),
                core.backlog_len(),
            )
        };
        let c = &self.counters;
        out.histogram(
            "tessera_coordinator_lock_hold_seconds",
            "How long the coordinator's shared lock was held, per acquisition (links, ticker, HTTP API, data thread, scrapes).",
            &[],
            &self.core.hold_times().snapshot(),
        );
        for (i, outcome) in LOGIN_OUTCOMES
            .iter()
            .copied()
            .chain(std::iter::once("other"))
            .enumerate()
        {
            out.counter(
                "tessera_login_requests_total",
                "POST /v1/login answers by outcome: ok, queued, or the error code.",
                &[("outcome", outcome)],
                c.logins[i].load(Ordering::Relaxed),
            );
        }
        out.counter(
            "tessera_admin_unauthorized_total",
            "Admin API requests refused for a missing or wrong admin token.",
            &[],
            c.admin_unauthorized.load(Ordering::Relaxed),
        );
        out.histogram(
            "tessera_password_hash_duration_seconds",
            "Time to hash or check a password (argon2id) on the blocking pool, wait for a hashing permit excluded.",
            &[],
            &c.password_hash.snapshot(),
        );
        out.gauge(
            "tessera_login_queue_length",
            "Logins waiting in the queue at the population cap.",
            &[],
            stats.queued as f64,
        );
        out.gauge(
            "tessera_login_tokens_pending",
            "Connect tokens issued and not used yet.",
            &[],
            stats.tokens_pending as f64,
        );
        for (fate, v) in [
            ("issued", stats.tokens_issued),
            ("burnt", stats.tokens_burnt),
            ("refused", stats.tokens_refused),
            ("revoked", stats.tokens_revoked),
            ("expired", logins.tokens_expired),
        ] {
            out.counter(
                "tessera_login_tokens_total",
                "Connect tokens: issued, used once (burnt), refused (replayed, expired, unknown), revoked by a newer login or a ban, expired unused.",
                &[("fate", fate)],
                v,
            );
        }
        out.gauge(
            "tessera_login_resume_keys",
            "Resume keys held (at most one per account).",
            &[],
            resume_keys as f64,
        );
        for (fate, v) in [
            ("issued", logins.resume_issued),
            ("used", logins.resume_used),
            ("revoked", logins.resume_revoked),
            ("expired", logins.resume_expired),
            ("evicted", logins.resume_evicted),
        ] {
            out.counter(
                "tessera_login_resume_keys_total",
                "Resume keys: issued with a token, spent on a login, replaced or revoked by a ban, expired, evicted oldest first at the cap.",
                &[("fate", fate)],
                v,
            );
        }
        for (reason, v) in [
            ("timed_out", logins.queue_timed_out),
            ("revoked", logins.queue_revoked),
        ] {
            out.counter(
                "tessera_login_queue_dropped_total",
                "Places dropped from the login queue: the ticket stopped polling, or a ban revoked it.",
                &[("reason", reason)],
                v,
            );
        }
        out.counter(
            "tessera_coordinator_sessions_total",
            "Sessions opened.",
            &[],
            stats.sessions,
        );
        for (outcome, v) in [
            ("refused", stats.replays_refused),
            ("missed", stats.replays_missed),
        ] {
            out.counter(
                "tessera_coordinator_session_replays_failed_total",
                "Gate session replays that failed: refused (the client is kicked with the reason), or missed (not replayed in time on the gate's new link; the session ends).",
                &[("outcome", outcome)],
                v,
            );
        }
        for (table, v) in [
            ("links", stats.sessions_linked),
            ("directory", stats.sessions_directory),
        ] {
            out.gauge(
                "tessera_coordinator_sessions_open",
                "Sessions open now: in the table of the gate links that carry them, and in the cluster's directory.",
                &[("table", table)],
                v as f64,
            );
        }
        out.counter(
            "tessera_coordinator_placements_total",
            "Scenes placed on a scene server, each under a new epoch.",
            &[],
            stats.placements,
        );
        out.counter(
            "tessera_coordinator_placements_refused_total",
            "Placements held back because the scene's saved states could not be read (placed again later).",
            &[],
            stats.placements_refused,
        );
        out.counter(
            "tessera_coordinator_objects_left_out_total",
            "Saved scene objects a placement could not carry (over one announcement's bound).",
            &[],
            stats.objects_left_out,
        );
        out.counter(
            "tessera_coordinator_failovers_total",
            "Scenes placed again because the server hosting them was lost.",
            &[],
            stats.failovers,
        );
        out.counter(
            "tessera_coordinator_stalls_total",
            "Times the coordinator found it had stalled (process stopped, lock held, runtime starved); nodes were not expired for that time.",
            &[],
            stats.stalls,
        );
        out.counter(
            "tessera_coordinator_nodes_down_total",
            "Nodes declared down for missed heartbeats.",
            &[],
            stats.nodes_down,
        );
        for (outcome, v) in [
            ("accepted", stats.attaches),
            ("refused", stats.attaches_refused),
        ] {
            out.counter(
                "tessera_coordinator_attaches_total",
                "Attach requests accepted or refused.",
                &[("outcome", outcome)],
                v,
            );
        }
        out.counter(
            "tessera_coordinator_transfers_total",
            "Completed portal transfers.",
            &[],
            stats.transfers,
        );
        out.counter(
            "tessera_coordinator_chat_lines_total",
            "Chat lines delivered.",
            &[],
            stats.chat_lines,
        );
        for (outcome, v) in [
            ("applied", stats.channel_ops - stats.channel_ops_refused),
            ("refused", stats.channel_ops_refused),
        ] {
            out.counter(
                "tessera_coordinator_channel_ops_total",
                "Channel asks from scenes, applied or refused (a bound, an unknown channel).",
                &[("outcome", outcome)],
                v,
            );
        }
        out.counter(
            "tessera_coordinator_channel_messages_total",
            "Messages to a channel's members or a list of avatars, from a game or a member.",
            &[],
            stats.channel_messages,
        );
        out.counter(
            "tessera_coordinator_channel_recipients_offline_total",
            "Recipients of channel messages skipped because offline.",
            &[],
            stats.channel_offline_skipped,
        );
        out.counter(
            "tessera_coordinator_channel_lines_refused_total",
            "Channel lines of a session refused: not a member, or no such channel.",
            &[],
            stats.channel_lines_refused,
        );
        out.gauge(
            "tessera_coordinator_channels",
            "Channels games hold now.",
            &[],
            stats.channels as f64,
        );
        out.gauge(
            "tessera_coordinator_channel_members",
            "Channel memberships held now.",
            &[],
            stats.channel_members as f64,
        );
        out.counter(
            "tessera_coordinator_events_stale_total",
            "Scene events from a placement that is no longer current.",
            &[],
            stats.events_stale,
        );
        out.gauge(
            "tessera_coordinator_effects_waiting",
            "Effects waiting behind a disk job of the data thread (an epoch write, a scene load, a portal move).",
            &[],
            waiting as f64,
        );
        out.counter(
            "tessera_coordinator_effects_dropped_total",
            "Effects dropped because too many waited behind the disk; placed and attached again later.",
            &[],
            stats.effects_dropped,
        );
        out.counter(
            "tessera_coordinator_persist_errors_total",
            "Durable writes of epochs or avatar scenes that failed.",
            &[],
            stats.persist_errors,
        );
        for (reason, v) in [
            ("links_refused", stats.links_refused),
            ("messages_refused", stats.refused),
            ("sends_failed", stats.sends_failed),
        ] {
            out.counter(
                "tessera_coordinator_link_refusals_total",
                "Links refused after the handshake, messages refused, and sends that did not fit a link's queue.",
                &[("reason", reason)],
                v,
            );
        }
        for s in &status.scenes {
            let l = [("scene", s.name.as_str())];
            out.gauge(
                "tessera_coordinator_scene_epoch",
                "The scene's latest placement epoch.",
                &l,
                s.epoch as f64,
            );
            out.gauge(
                "tessera_coordinator_scene_placed",
                "1 when the scene is placed on a scene server.",
                &l,
                if !s.server.is_empty() { 1.0 } else { 0.0 },
            );
            out.gauge(
                "tessera_coordinator_scene_online",
                "Avatars attached in the scene for a session, from the directory.",
                &l,
                f64::from(s.online),
            );
        }
        let alive = |b: bool| if b { "true" } else { "false" };
        let servers = |a: bool| status.scene_servers.iter().filter(|s| s.alive == a).count();
        let gates = |a: bool| status.gates.iter().filter(|g| g.alive == a).count();
        for a in [true, false] {
            out.gauge(
                "tessera_coordinator_nodes",
                "Registered scene servers and gates, alive or not.",
                &[("kind", "scene_server"), ("alive", alive(a))],
                servers(a) as f64,
            );
            out.gauge(
                "tessera_coordinator_nodes",
                "Registered scene servers and gates, alive or not.",
                &[("kind", "gate"), ("alive", alive(a))],
                gates(a) as f64,
            );
        }
        out.counter(
            "tessera_writer_batches_submitted_total",
            "Save batches handed to the write-behind writer.",
            &[],
            stats.batches,
        );
        out.counter(
            "tessera_writer_batches_stale_total",
            "Save batches refused for a stale epoch before the writer.",
            &[],
            stats.batches_stale,
        );
        for (fate, v) in [
            ("sent", stats.save_acks),
            ("dropped", stats.save_acks_dropped),
        ] {
            out.counter(
                "tessera_writer_save_acks_total",
                "Acknowledgements to scene servers that their save batches are durable: sent, or forgotten because too many waited (a later ack covers them).",
                &[("fate", fate)],
                v,
            );
        }
        if let Some(w) = writer {
            out.counter(
                "tessera_writer_commits_total",
                "Durable commits of the writer.",
                &[],
                w.commits,
            );
            out.counter(
                "tessera_writer_commit_errors_total",
                "Commits that failed (retried).",
                &[],
                w.commit_errors,
            );
            out.gauge(
                "tessera_writer_pending_states",
                "PC states submitted and waiting for a commit.",
                &[],
                w.states_pending() as f64,
            );
            out.gauge(
                "tessera_writer_pending_batches",
                "Save batches submitted and not yet committed.",
                &[],
                w.submitted.saturating_sub(w.committed_batches) as f64,
            );
            for (fate, v) in [
                ("written", w.states_written),
                ("superseded", w.states_superseded),
                ("stale", w.states_stale),
                ("refused", w.states_refused),
                ("dropped", w.states_dropped),
            ] {
                out.counter(
                    "tessera_writer_states_total",
                    "PC states by fate: written, superseded by a newer one, older than one pending, refused by the store, given up at shutdown.",
                    &[("fate", fate)],
                    v,
                );
            }
        }
        out.histogram(
            "tessera_writer_commit_duration_seconds",
            "Wall time of one durable commit, begin to commit.",
            &[],
            &c.commit_time.snapshot(),
        );
        out.histogram(
            "tessera_writer_commit_states",
            "PC states written by one commit.",
            &[],
            &c.commit_states.snapshot(),
        );
        out.histogram(
            "tessera_writer_commit_batches",
            "Save batches merged into one commit.",
            &[],
            &c.commit_batches.snapshot(),
        );
        self.links
            .snapshot()
            .collect("coordinator", "listener", out);
    }

    fn live(&self) -> Check {
        let c = &self.counters;
        c.live_at(u64::try_from(c.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn ready(&self) -> Check {
        let store = Arc::clone(self.core.lock().store());
        store
            .scene_epochs()
            .map(|_| ())
            .map_err(|e| format!("coordinator: database unreachable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticker_silent_past_5_s_or_3_periods_is_not_live() {
        let c = Counters::new(Duration::from_millis(100));
        assert_eq!(c.live_at(5_000), Ok(()));
        assert_eq!(
            c.live_at(6_500),
            Err("coordinator: cluster ticker has not run for 6.5 s".into())
        );
        c.ticked_ms.store(6_000, Ordering::Relaxed);
        assert_eq!(c.live_at(6_500), Ok(()));
        let slow = Counters::new(Duration::from_secs(10));
        assert_eq!(slow.live_at(29_000), Ok(()));
        assert!(slow.live_at(31_000).is_err());
    }

    #[test]
    fn logins_are_counted_by_known_outcome_and_the_rest_as_other() {
        let c = Counters::new(Duration::from_millis(100));
        c.login("ok");
        c.login("rate_limited");
        c.login("rate_limited");
        c.login("something new");
        let n = |o: &str| {
            let i = LOGIN_OUTCOMES
                .iter()
                .position(|&x| x == o)
                .unwrap_or(LOGIN_OUTCOMES.len());
            c.logins[i].load(Ordering::Relaxed)
        };
        assert_eq!(
            (n("ok"), n("rate_limited"), n("other"), n("queued")),
            (1, 2, 1, 0)
        );
    }
}
