//! **Bot clients**: many simulated players in one process, through the real
//! login API (`POST /v1/register`, `/v1/login`, `/v1/login/poll`) and the
//! real gate ([`ClientConn`](tessera_gate::ClientConn): the gate client
//! driven by the bot's own task) — what `tessera bots` runs.
//!
//! Each bot is one tokio task: it logs in (registering its account the first
//! time: `bot{i}@bots.tessera.test`), connects to the gate with the token it
//! got, creates an avatar if the account has none (`Bot{i}`), enters the
//! world and then plays its [`Behaviour`] — movement inputs about ten times a
//! second, chat lines, or log-out/log-in cycles — until the run ends.
//!
//! What is measured ([`BotReport`]):
//!
//! * **input-to-visible round trip**: from queueing input `seq` on the
//!   client to receiving the first replication packet whose `ack >= seq`
//!   (each bot keeps a bounded ring of send times, [`RttRing`]), over the
//!   measured period (`rtt_ms`) and, separately, over the ramp-up while bots
//!   still log in (`rtt_ms_ramp_up`) and over the warm-up between the two
//!   (`rtt_ms_warmup`, [`BotConfig::warmup`]: the backlog a login storm
//!   leaves behind drains then);
//! * payload bytes and datagrams per second per client, both ways, over the
//!   time each bot spent in the world;
//! * the login and login-to-entered latencies, and logins per second by
//!   kind (password or resume key);
//! * the cluster's worst scene tick p99, sampled from `GET /v1/status`.
//!
//! The files, by concern: `config` (settings, behaviours, bot accounts),
//! `run` (the driver: starting bots, phases, progress, status sampling, the
//! report's totals), `login` (a bot's HTTP login with retries and the
//! queue), `session` (a bot at the gate and in the world), `shared` (what
//! the bots of a run share), `measure` (the send-time ring, round-trip
//! windows and histograms, tallies) and `report` (the report and progress
//! line, as JSON and text).
//!
//! **Invariant:** network input never panics a bot: every HTTP body is capped
//! and parsed into a value or an error, every gate message and replication
//! packet is decoded with the non-panicking decoders and a failure is
//! counted.
//!
//! **Invariant:** memory is bounded per bot: the gate client's own bounded
//! queues, a fixed-size send-time ring, a small RTT batch flushed into one
//! shared histogram, and failure tallies capped in the number of distinct
//! reasons.

mod config;
mod login;
mod measure;
mod report;
mod run;
mod session;
mod shared;
mod view_check;

pub use config::{
    AdminAccess, Behaviour, BotConfig, BotConfigError, DEFAULT_LOGIN, MAX_BOTS, MAX_DURATION_S,
    bot_avatar_name, bot_email, bot_password, normalize_login_url, seed_from_clock,
};
pub use measure::{RTT_RING, RTT_WINDOW, RttRing};
pub use report::{BotPhase, BotReport, GameCounts, Logins, Percentiles, Progress, UpDown};
pub use run::{check_reachable, run, run_until, worst_tick_p99};
pub use view_check::{STALE_BOUND_TICKS, SceneTruth, Truth, ViewCheck, check as check_view};
