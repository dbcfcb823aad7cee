//! What a run tells its user: the final [`BotReport`] (one JSON object, or
//! text) and the [`Progress`] lines while it runs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::Behaviour;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BotPhase {
    /// Bots are logging in and entering.
    Connecting,
    /// Every bot has entered or failed; the warm-up runs (not measured).
    WarmingUp,
    /// The measured period runs.
    Running,
    /// The period is over; the bots stand still while their views are
    /// checked against the server's truth.
    Checking,
    /// The period is over; bots are disconnecting.
    Stopping,
}

impl BotPhase {
    fn as_str(self) -> &'static str {
        match self {
            BotPhase::Connecting => "connecting",
            BotPhase::WarmingUp => "warming up",
            BotPhase::Running => "running",
            BotPhase::Checking => "checking",
            BotPhase::Stopping => "stopping",
        }
    }
}

/// A snapshot for a progress line (about four a second).
#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: BotPhase,
    pub elapsed: Duration,
    /// Time left in the measured period (while [`BotPhase::Running`]).
    pub remaining: Option<Duration>,
    pub bots: usize,
    /// Bots that have started (the rest wait for a login slot).
    pub started: u64,
    /// Bots in the world right now.
    pub in_world: u64,
    /// Bots that have entered at least once.
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub churn_cycles: u64,
    pub rtt_samples: u64,
    /// Round trips in the last full window of [`RTT_WINDOW`](super::RTT_WINDOW)
    /// (None: no samples).
    pub rtt_recent: Option<Percentiles>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bots {} {:>5.1}s: started {}/{}, in world {}, connected {}, failed {}, dropped {}",
            self.phase.as_str(),
            self.elapsed.as_secs_f64(),
            self.started,
            self.bots,
            self.in_world,
            self.connected,
            self.failed,
            self.dropped,
        )?;
        if self.churn_cycles > 0 {
            write!(f, ", cycles {}", self.churn_cycles)?;
        }
        if let Some(rtt) = self.rtt_recent {
            write!(f, ", rtt p50/p99 {:.0}/{:.0} ms", rtt.p50, rtt.p99)?;
        }
        if let Some(left) = self.remaining {
            write!(f, ", {}s left", left.as_secs())?;
        }
        Ok(())
    }
}

/// 50th and 99th percentile and maximum, in milliseconds (0 with no samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub(super) fn of_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| (us as f64 / 1e3 * 1000.0).round() / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }

    /// `p50 … ms, p99 … ms, max … ms`, for the text report.
    fn text(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }
}

/// A per-second rate each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpDown {
    /// Client to server.
    pub up: f64,
    /// Server to client.
    pub down: f64,
}

/// Successful logins of a run: `{"password","resume","resume_refused","per_s"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Logins {
    /// With email and password: the server hashed a password for each.
    pub password: u64,
    /// With a resume key (a bot coming back): no password hash.
    pub resume: u64,
    /// Resume keys the server refused (spent, expired or revoked); the bot
    /// then logged in with its password.
    pub resume_refused: u64,
    /// Logins per second over the whole run, from the first login request
    /// until the bots were stopped.
    pub per_s: f64,
}

impl Logins {
    pub fn total(&self) -> u64 {
        self.password + self.resume
    }
}

/// What the bots did in the game itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameCounts {
    /// Game actions sent.
    pub actions: u64,
    /// Game events received (reliable and not).
    pub events: u64,
    /// `Hit` and `Death` events naming the bot as the one that struck.
    pub hits: u64,
    pub kills: u64,
}

/// The result of a run. Serialized as one JSON object by `--report json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BotReport {
    pub bots: u64,
    /// Bots that entered the world (at least once).
    pub connected: u64,
    /// Bots that never entered.
    pub failed: u64,
    /// Bots that entered and were then disconnected by the server or timed
    /// out (churn's own leaves are not drops).
    pub dropped: u64,
    /// Input-to-visible round trip over the measured period (every bot in
    /// the world or failed: the steady state).
    pub rtt_ms: Percentiles,
    /// Input-to-visible round trip while bots were still logging in and
    /// entering (the ramp-up, with the server hashing passwords).
    pub rtt_ms_ramp_up: Percentiles,
    /// Input-to-visible round trip in the warm-up between the ramp-up and
    /// the measured period.
    pub rtt_ms_warmup: Percentiles,
    /// The warm-up, in seconds.
    pub warmup_s: f64,
    /// UDP payload bytes per second per client in the world (everything the
    /// client's socket sent and received: netcode, renet and messages; IP and
    /// UDP headers not included).
    pub bytes_per_s_per_client: UpDown,
    /// Of which message payload (what the game sent, before renet and
    /// netcode framing).
    pub payload_bytes_per_s_per_client: UpDown,
    /// UDP datagrams per second per client in the world.
    pub datagrams_per_s_per_client: UpDown,
    /// The largest scene `tick_p99_ms` seen in `/v1/status` during the
    /// measured period (`null` if no sample succeeded).
    pub server_tick_p99_ms: Option<f64>,
    /// The same while bots were logging in, entering and warming up.
    pub server_tick_p99_ms_ramp_up: Option<f64>,
    pub behaviour: Behaviour,
    /// The seed of the bots' choices (`--seed` repeats them).
    pub seed: u64,
    /// The measured period, in seconds.
    pub duration_s: f64,
    /// Total time bots spent in the world, in seconds.
    pub client_seconds: f64,
    /// Accounts this run registered (`201`); an account that exists is
    /// simply logged in, so a second run registers none.
    pub registered: u64,
    /// Successful logins, by how (churn logs in again each cycle, with
    /// its resume key).
    pub logins: Logins,
    /// From the first login request to the login token.
    pub login_ms: Percentiles,
    /// From the first login request to `Entered`.
    pub enter_ms: Percentiles,
    pub rtt_samples: u64,
    /// Inputs whose send time fell out of the ring before any ack.
    pub rtt_unacked: u64,
    pub inputs_sent: u64,
    pub state_packets: u64,
    /// Acknowledgements of state sent alone (the rest ride on inputs).
    pub acks_sent: u64,
    /// State packets not applied: not newer than the newest applied
    /// (duplicates, late ones), or of a placement the bot has left.
    pub state_stale: u64,
    pub state_foreign: u64,
    /// The `--loss` asked for, and the datagrams it dropped.
    pub loss: f32,
    pub loss_dropped: u64,
    /// Each bot's view against the server's truth at the end of the run
    /// (absent without the admin secret).
    pub view: Option<super::view_check::ViewCheck>,
    /// Server messages or replication packets that did not decode.
    pub decode_errors: u64,
    /// Messages the gate client had no room for (its queues are bounded).
    pub client_queue_drops: u64,
    /// `ServerMsg::Error`s received after entering.
    pub server_errors: u64,
    /// `ServerMsg::Moving` (portal transfers) received.
    pub transfers: u64,
    pub chat_sent: u64,
    pub chat_received: u64,
    /// The game's actions and events (see [`GameCounts`]).
    pub game: GameCounts,
    pub churn_cycles: u64,
    /// Churn bots that could not log in again after a cycle (they stop).
    pub churn_failed: u64,
    pub status_samples: u64,
    pub status_errors: u64,
    /// Why bots failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Why bots were dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

impl fmt::Display for BotReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_outcomes(f)?;
        self.write_latencies(f)?;
        self.write_traffic(f)?;
        self.write_server_tick(f)?;
        self.write_counts(f)
    }
}

/// The text report, a few lines at a time.
impl BotReport {
    /// The run, and how many bots got in, failed or were dropped, and why.
    fn write_outcomes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bots: {} ({}, seed {}), measured for {:.1} s",
            self.bots, self.behaviour, self.seed, self.duration_s
        )?;
        writeln!(
            f,
            "  connected {}, failed {}, dropped {}",
            self.connected, self.failed, self.dropped
        )?;
        for (title, tally) in [("failed", &self.failures), ("dropped", &self.drops)] {
            for (reason, n) in tally {
                writeln!(f, "    {title}: {n} x {reason}")?;
            }
        }
        Ok(())
    }

    /// Login, entry and the input-to-visible round trips of each window.
    fn write_latencies(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  login:          {} ({} logins, {} accounts registered)",
            self.login_ms.text(),
            self.logins.total(),
            self.registered
        )?;
        writeln!(
            f,
            "  logins:         {:.1}/s: {} with the password, {} with a resume key ({} keys refused)",
            self.logins.per_s, self.logins.password, self.logins.resume, self.logins.resume_refused
        )?;
        writeln!(f, "  login to enter: {}", self.enter_ms.text())?;
        writeln!(
            f,
            "  input-to-visible rtt: {} ({} samples in all, {} unacked)",
            self.rtt_ms.text(),
            self.rtt_samples,
            self.rtt_unacked
        )?;
        writeln!(
            f,
            "  input-to-visible rtt while bots logged in: {}",
            self.rtt_ms_ramp_up.text()
        )?;
        writeln!(
            f,
            "  input-to-visible rtt in the {:.0} s warm-up: {}",
            self.warmup_s,
            self.rtt_ms_warmup.text()
        )
    }

    /// Bytes and datagrams per client, both ways.
    fn write_traffic(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  per client: up {:.0} B/s ({:.1} datagrams/s, {:.0} B/s of messages), down {:.0} B/s ({:.1} datagrams/s, {:.0} B/s of messages)",
            self.bytes_per_s_per_client.up,
            self.datagrams_per_s_per_client.up,
            self.payload_bytes_per_s_per_client.up,
            self.bytes_per_s_per_client.down,
            self.datagrams_per_s_per_client.down,
            self.payload_bytes_per_s_per_client.down,
        )
    }

    /// The worst scene tick p99 sampled from `/v1/status`.
    fn write_server_tick(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ramp = self
            .server_tick_p99_ms_ramp_up
            .map_or(String::new(), |ms| format!("; {ms:.2} ms in the ramp-up"));
        match self.server_tick_p99_ms {
            Some(ms) => writeln!(
                f,
                "  server tick p99 (worst scene, worst sample): {ms:.2} ms{ramp} ({} samples, {} errors)",
                self.status_samples, self.status_errors
            ),
            None => writeln!(
                f,
                "  server tick p99: no status sample ({} errors)",
                self.status_errors
            ),
        }
    }

    /// Message counts, and the chat and churn lines of those behaviours.
    fn write_counts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  inputs {}, state packets {} ({} stale, {} foreign), acks alone {}, loss {} ({} datagrams dropped)",
            self.inputs_sent,
            self.state_packets,
            self.state_stale,
            self.state_foreign,
            self.acks_sent,
            self.loss,
            self.loss_dropped
        )?;
        if let Some(v) = &self.view {
            writeln!(
                f,
                "  view check: {} bots ({} unchecked), {} entities: {} missing, {} ghosts, {} stale (bound {} ticks)",
                v.bots,
                v.bots_unchecked,
                v.checked,
                v.missing,
                v.ghosts,
                v.stale,
                v.stale_bound_ticks
            )?;
        }
        writeln!(
            f,
            "  decode errors {}, client queue drops {}, server errors {}, transfers {}",
            self.decode_errors, self.client_queue_drops, self.server_errors, self.transfers
        )?;
        if self.behaviour == Behaviour::Chat || self.chat_sent > 0 {
            writeln!(
                f,
                "  chat: sent {}, received {}",
                self.chat_sent, self.chat_received
            )?;
        }
        if self.game != GameCounts::default() {
            writeln!(
                f,
                "  game: {} actions, {} events, {} hits, {} kills",
                self.game.actions, self.game.events, self.game.hits, self.game.kills
            )?;
        }
        if self.behaviour == Behaviour::Churn {
            writeln!(
                f,
                "  churn: {} cycles, {} failed to log in again",
                self.churn_cycles, self.churn_failed
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_has_the_documented_shape() {
        let report = BotReport {
            bots: 3,
            connected: 2,
            failed: 1,
            dropped: 0,
            rtt_ms: Percentiles {
                p50: 40.0,
                p99: 80.5,
                max: 90.0,
            },
            server_tick_p99_ms: Some(3.25),
            server_tick_p99_ms_ramp_up: Some(61.5),
            logins: Logins {
                password: 3,
                resume: 7,
                resume_refused: 1,
                per_s: 2.5,
            },
            ..BotReport::default()
        };
        let json = serde_json::to_string(&report).expect("serializes");
        assert!(!json.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
        for key in [
            "bots",
            "connected",
            "failed",
            "dropped",
            "rtt_ms",
            "rtt_ms_ramp_up",
            "rtt_ms_warmup",
            "warmup_s",
            "seed",
            "bytes_per_s_per_client",
            "server_tick_p99_ms",
            "server_tick_p99_ms_ramp_up",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(v["bots"], 3);
        assert_eq!(v["rtt_ms"]["p50"], 40.0);
        assert_eq!(v["rtt_ms"]["p99"], 80.5);
        assert!(v["bytes_per_s_per_client"]["up"].is_number());
        assert!(v["bytes_per_s_per_client"]["down"].is_number());
        assert_eq!(v["server_tick_p99_ms"], 3.25);
        assert_eq!(v["server_tick_p99_ms_ramp_up"], 61.5);
        assert_eq!(v["behaviour"], "wander");
        assert_eq!(
            v["logins"],
            serde_json::json!({"password": 3, "resume": 7, "resume_refused": 1, "per_s": 2.5})
        );
        let back: BotReport = serde_json::from_str(&json).expect("round trips");
        assert_eq!(back, report);
        // No status sample: null, not a made-up zero.
        let none = BotReport::default();
        let v = serde_json::to_value(&none).expect("serializes");
        assert!(v["server_tick_p99_ms"].is_null());
        // The text report names the failure reasons.
        let mut failing = report.clone();
        failing.failures.insert("login: bad_credentials".into(), 1);
        let text = failing.to_string();
        assert!(
            text.contains("failed: 1 x login: bad_credentials"),
            "{text}"
        );
        assert!(
            text.contains("2.5/s: 3 with the password, 7 with a resume key (1 keys refused)"),
            "{text}"
        );
        assert!(text.contains("3.25 ms; 61.50 ms in the ramp-up"), "{text}");
    }
}
