//! **Bot clients**: many simulated players in one process, through the real
//! login API (`POST /v1/register`, `/v1/login`, `/v1/login/poll`) and the
//! real gate ([`ClientConn`]: the gate client driven by the bot's own task)
//! — what `tessera bots` runs.
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
//! * the login and login-to-entered latencies;
//! * the cluster's worst scene tick p99, sampled from `GET /v1/status`.
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_link::lock;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tessera_sim::protocol::StatePacket;
use tessera_sim::rng::{SceneRng, mix};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::http_client::{HttpClient as Http, HttpError};
use tessera_gate::token::{from_hex, token_from_bytes};
use tessera_gate::{Channel, ClientConfig, ClientConn, ClientEvent};
use tessera_proto::client::{CLIENT_PROTOCOL, ChatTarget, ClientMsg, ServerMsg};
use tessera_proto::login::{
    LoginRequest, LoginResponse, PollRequest, RegisterRequest, RegisterResponse,
};
use tessera_wire::{Input, MoveMode};

/// The login API a bot run uses unless told otherwise.
pub const DEFAULT_LOGIN: &str = "http://127.0.0.1:7080";
/// Most bots one run drives.
pub const MAX_BOTS: usize = 10_000;
/// Longest run, in seconds.
pub const MAX_DURATION_S: u64 = 3600;
/// Capacity of each bot's ring of input send times (6.4 s of inputs at 10 Hz).
pub const RTT_RING: usize = 64;
/// Most distinct reasons kept in a tally; the rest count under `other`.
const MAX_REASONS: usize = 32;
/// Longest reason text kept in a tally.
const MAX_REASON_CHARS: usize = 80;

/// What a bot does once in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Walks, changing to a random direction every 2–5 s.
    #[default]
    Wander,
    /// Wanders and says a scene (or, one time in ten, global) chat line
    /// about every 5 s; counts the lines it receives.
    Chat,
    /// Logs in, enters, wanders 5–15 s, leaves, disconnects, and starts
    /// over; each completed leave is a cycle (not a drop).
    Churn,
}

impl Behaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Wander => "wander",
            Behaviour::Chat => "chat",
            Behaviour::Churn => "churn",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Behaviour {
    type Err = BotConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wander" => Ok(Behaviour::Wander),
            "chat" => Ok(Behaviour::Chat),
            "churn" => Ok(Behaviour::Churn),
            other => Err(BotConfigError::Behaviour(other.to_owned())),
        }
    }
}

/// A bad [`BotConfig`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BotConfigError {
    #[error("--count must be between 1 and {MAX_BOTS}, not {0}")]
    Count(usize),
    #[error("--duration must be between 1 and {MAX_DURATION_S} seconds, not {0}")]
    Duration(u64),
    #[error("--warmup must be between 0 and {MAX_DURATION_S} seconds, not {0}")]
    Warmup(u64),
    #[error("--login {url:?} is not a usable URL: {why}")]
    Url { url: String, why: &'static str },
    #[error("unknown behaviour {0:?} (wander, chat or churn)")]
    Behaviour(String),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the first account index plus the count must fit in a u32")]
    Index,
}

/// Settings for a bot run. Build with [`BotConfig::new`] (which validates);
/// the tuning fields may then be changed ([`run`] validates again).
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// How many bots (1 ..= [`MAX_BOTS`]).
    pub count: usize,
    /// The login API's base URL, `http://host:port` (no trailing slash).
    pub login: String,
    /// How long the bots play once every bot has entered or failed.
    pub duration: Duration,
    pub behaviour: Behaviour,
    /// Bots use accounts `first_index .. first_index + count`. Default 0.
    pub first_index: usize,
    /// Most bots in the login phase at once (each costs the server a password
    /// hash or two). Default 100.
    pub logins_in_flight: usize,
    /// Inputs per second per bot. Default 10.
    pub input_hz: u32,
    /// Timeout of one HTTP request. Default 10 s.
    pub request_timeout: Duration,
    /// How long a bot may take from its first login request to a login token,
    /// retries and queueing included. Default 120 s.
    pub login_timeout: Duration,
    /// How long a bot may take from the token to `Entered`. Default 30 s.
    pub enter_timeout: Duration,
    /// How often `GET /v1/status` is sampled. Default 1 s.
    pub status_interval: Duration,
    /// Time between the last bot entering (or failing) and the measured
    /// period, whole seconds: round trips then go to `rtt_ms_warmup`. The
    /// login storm's password hashing leaves queues behind that take a few
    /// seconds to drain; the measured period is the steady state after.
    /// Default 10 s; 0 measures from the last entry.
    pub warmup: Duration,
    /// Seed of the bots' random choices (directions, timings), reported as
    /// `seed`. Default: from the clock, so runs differ. Avatars are stored
    /// where they stop, so a fixed seed walks every bot the same way run
    /// after run and a reused world drifts into its corners (measured: down
    /// bytes per client and the field's tick p99 grew run after run, 11.5 →
    /// 13.2 KB/s and 33 → 50 ms over six runs). Set it to repeat a run's choices.
    pub seed: u64,
}

/// A seed that differs from run to run (the clock, mixed).
pub fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos, u64::from(std::process::id()), 3)
}

impl BotConfig {
    /// A validated configuration with default tuning.
    pub fn new(
        count: usize,
        login: &str,
        duration_s: u64,
        behaviour: Behaviour,
    ) -> Result<Self, BotConfigError> {
        let config = Self {
            count,
            login: normalize_login_url(login)?,
            duration: Duration::from_secs(duration_s),
            behaviour,
            first_index: 0,
            logins_in_flight: 100,
            input_hz: 10,
            request_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(120),
            enter_timeout: Duration::from_secs(30),
            status_interval: Duration::from_secs(1),
            warmup: Duration::from_secs(10),
            seed: seed_from_clock(),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), BotConfigError> {
        if !(1..=MAX_BOTS).contains(&self.count) {
            return Err(BotConfigError::Count(self.count));
        }
        let secs = self.duration.as_secs();
        if !(1..=MAX_DURATION_S).contains(&secs) || self.duration.subsec_nanos() != 0 {
            return Err(BotConfigError::Duration(secs));
        }
        let warmup = self.warmup.as_secs();
        if warmup > MAX_DURATION_S || self.warmup.subsec_nanos() != 0 {
            return Err(BotConfigError::Warmup(warmup));
        }
        normalize_login_url(&self.login)?;
        if self.logins_in_flight == 0 {
            return Err(BotConfigError::Zero("logins in flight"));
        }
        if self.input_hz == 0 {
            return Err(BotConfigError::Zero("input rate"));
        }
        for (name, d) in [
            ("request timeout", self.request_timeout),
            ("login timeout", self.login_timeout),
            ("enter timeout", self.enter_timeout),
            ("status interval", self.status_interval),
        ] {
            if d.is_zero() {
                return Err(BotConfigError::Zero(name));
            }
        }
        if self
            .first_index
            .checked_add(self.count)
            .is_none_or(|end| u32::try_from(end).is_err())
        {
            return Err(BotConfigError::Index);
        }
        Ok(())
    }
}

/// Checks a login base URL and returns it without a trailing slash: plain
/// `http` (the client speaks no TLS), a host, no path, query or fragment.
pub fn normalize_login_url(url: &str) -> Result<String, BotConfigError> {
    let bad = |why| BotConfigError::Url {
        url: url.to_owned(),
        why,
    };
    let trimmed = url.trim().trim_end_matches('/');
    let uri: hyper::Uri = trimmed.parse().map_err(|_| bad("does not parse"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// is supported")),
        None => return Err(bad("needs a scheme, e.g. http://127.0.0.1:7080")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("needs a host"));
    };
    if authority.host().is_empty() {
        return Err(bad("needs a host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || trimmed.contains('#') {
        return Err(bad("must be a base URL without a path, query or fragment"));
    }
    Ok(format!("http://{authority}"))
}

/// The email of bot `i`.
pub fn bot_email(i: usize) -> String {
    format!("bot{i}@bots.tessera.test")
}

/// The password of bot `i` (long enough, not the email).
pub fn bot_password(i: usize) -> String {
    format!("bot-password-{i}-tessera")
}

/// The avatar name bot `i` creates when its account has none.
pub fn bot_avatar_name(i: usize) -> String {
    format!("Bot{i}")
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Bots are logging in and entering.
    Connecting,
    /// Every bot has entered or failed; the warm-up runs (not measured).
    WarmingUp,
    /// The measured period runs.
    Running,
    /// The period is over; bots are disconnecting.
    Stopping,
}

/// A snapshot for a progress line (about four a second).
#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: Phase,
    pub elapsed: Duration,
    /// Time left in the measured period (while [`Phase::Running`]).
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
    /// Round trips in the last full window of [`RTT_WINDOW`] (None: no
    /// samples).
    pub rtt_recent: Option<Percentiles>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Connecting => "connecting",
            Phase::WarmingUp => "warming up",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
        };
        write!(
            f,
            "bots {phase} {:>5.1}s: started {}/{}, in world {}, connected {}, failed {}, dropped {}",
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
    fn of_us(h: &Histogram<u64>) -> Self {
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
}

/// A per-second rate each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpDown {
    /// Client to server.
    pub up: f64,
    /// Server to client.
    pub down: f64,
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
    /// The largest scene `tick_p99_ms` seen in `/v1/status` during the run
    /// (`null` if no sample succeeded).
    pub server_tick_p99_ms: Option<f64>,
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
    /// Successful logins (churn logs in again each cycle).
    pub logins: u64,
    /// From the first login request to the login token.
    pub login_ms: Percentiles,
    /// From the first login request to `Entered`.
    pub enter_ms: Percentiles,
    pub rtt_samples: u64,
    /// Inputs whose send time fell out of the ring before any ack.
    pub rtt_unacked: u64,
    pub inputs_sent: u64,
    pub state_packets: u64,
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
        let p = |p: &Percentiles| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50, p.p99, p.max
            )
        };
        writeln!(
            f,
            "  login:          {} ({} logins, {} accounts registered)",
            p(&self.login_ms),
            self.logins,
            self.registered
        )?;
        writeln!(f, "  login to enter: {}", p(&self.enter_ms))?;
        writeln!(
            f,
            "  input-to-visible rtt: {} ({} samples in all, {} unacked)",
            p(&self.rtt_ms),
            self.rtt_samples,
            self.rtt_unacked
        )?;
        writeln!(
            f,
            "  input-to-visible rtt while bots logged in: {}",
            p(&self.rtt_ms_ramp_up)
        )?;
        writeln!(
            f,
            "  input-to-visible rtt in the {:.0} s warm-up: {}",
            self.warmup_s,
            p(&self.rtt_ms_warmup)
        )?;
        writeln!(
            f,
            "  per client: up {:.0} B/s ({:.1} datagrams/s, {:.0} B/s of messages), down {:.0} B/s ({:.1} datagrams/s, {:.0} B/s of messages)",
            self.bytes_per_s_per_client.up,
            self.datagrams_per_s_per_client.up,
            self.payload_bytes_per_s_per_client.up,
            self.bytes_per_s_per_client.down,
            self.datagrams_per_s_per_client.down,
            self.payload_bytes_per_s_per_client.down,
        )?;
        match self.server_tick_p99_ms {
            Some(ms) => writeln!(
                f,
                "  server tick p99 (worst scene, worst sample): {ms:.2} ms ({} samples, {} errors)",
                self.status_samples, self.status_errors
            )?,
            None => writeln!(
                f,
                "  server tick p99: no status sample ({} errors)",
                self.status_errors
            )?,
        }
        writeln!(
            f,
            "  inputs {}, state packets {}, decode errors {}, client queue drops {}, server errors {}, transfers {}",
            self.inputs_sent,
            self.state_packets,
            self.decode_errors,
            self.client_queue_drops,
            self.server_errors,
            self.transfers
        )?;
        if self.behaviour == Behaviour::Chat || self.chat_sent > 0 {
            writeln!(
                f,
                "  chat: sent {}, received {}",
                self.chat_sent, self.chat_received
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

/// Counts by reason, at most [`MAX_REASONS`] distinct ones (the rest under
/// `other`), reasons cut to [`MAX_REASON_CHARS`] — server-sent text must not
/// grow it without bound.
#[derive(Debug, Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, reason: &str) {
        self.add_n(reason, 1);
    }

    fn add_n(&mut self, reason: &str, n: u64) {
        // Numbers (ids, addresses, times) become `N`, so one cause is one key.
        let mut key = String::new();
        let mut in_number = false;
        for c in reason_chars(reason) {
            let digit = c.is_ascii_digit();
            if !(digit && in_number) {
                key.push(if digit { 'N' } else { c });
            }
            in_number = digit;
        }
        let mut reason = key;
        if !self.0.contains_key(&reason) && self.0.len() >= MAX_REASONS {
            reason = "other".to_owned();
        }
        *self.0.entry(reason).or_insert(0) += n;
    }
}

fn reason_chars(reason: &str) -> impl Iterator<Item = char> + '_ {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
}

/// Microseconds, 1 µs .. 10 min, 3 significant figures.
fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

fn record_us(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters shared by every bot of a run.
#[derive(Default)]
struct Counters {
    started: AtomicU64,
    in_world: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Bots that have entered once or failed (the connect phase ends when
    /// this reaches the count).
    settled: AtomicU64,
    registered: AtomicU64,
    logins: AtomicU64,
    rtt_samples: AtomicU64,
    rtt_unacked: AtomicU64,
    inputs_sent: AtomicU64,
    state_packets: AtomicU64,
    decode_errors: AtomicU64,
    client_queue_drops: AtomicU64,
    server_errors: AtomicU64,
    transfers: AtomicU64,
    chat_sent: AtomicU64,
    chat_received: AtomicU64,
    churn_cycles: AtomicU64,
    churn_failed: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    payload_up: AtomicU64,
    payload_down: AtomicU64,
    datagrams_up: AtomicU64,
    datagrams_down: AtomicU64,
    world_micros: AtomicU64,
    status_samples: AtomicU64,
    status_errors: AtomicU64,
    /// The worst tick p99 seen, as f64 bits (0 = none yet).
    tick_p99_bits: AtomicU64,
}

const WINDOW_RAMP_UP: u8 = 0;
const WINDOW_WARMUP: u8 = 1;
const WINDOW_MEASURED: u8 = 2;
const WINDOW_AFTER: u8 = 3;

/// The window of the progress line's round trips.
pub const RTT_WINDOW: Duration = Duration::from_secs(5);

struct RecentRtt {
    current: Histogram<u64>,
    since: Instant,
    /// The last full window's percentiles.
    last: Option<Percentiles>,
}

struct Shared {
    config: BotConfig,
    http: Http,
    /// Login slots: a bot holds one from its first login request to its
    /// token (start-up and churn re-logins alike).
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    n: Counters,
    rtt: Mutex<Histogram<u64>>,
    rtt_ramp: Mutex<Histogram<u64>>,
    /// Round trips by window, for the progress line.
    rtt_recent: Mutex<RecentRtt>,
    /// Which histogram round trips go to: one of the `WINDOW_*`.
    window: std::sync::atomic::AtomicU8,
    rtt_warmup: Mutex<Histogram<u64>>,
    login: Mutex<Histogram<u64>>,
    enter: Mutex<Histogram<u64>>,
    failures: Mutex<Tally>,
    drops: Mutex<Tally>,
}

impl Shared {
    fn fail(&self, reason: &str) {
        add(&self.n.failed, 1);
        add(&self.n.settled, 1);
        lock(&self.failures).add(reason);
    }

    fn drop_bot(&self, reason: &str) {
        add(&self.n.dropped, 1);
        lock(&self.drops).add(reason);
    }

    fn progress(&self, phase: Phase, elapsed: Duration, remaining: Option<Duration>) -> Progress {
        Progress {
            phase,
            elapsed,
            remaining,
            bots: self.config.count,
            started: get(&self.n.started),
            in_world: get(&self.n.in_world),
            connected: get(&self.n.connected),
            failed: get(&self.n.failed),
            dropped: get(&self.n.dropped),
            churn_cycles: get(&self.n.churn_cycles),
            rtt_samples: get(&self.n.rtt_samples),
            rtt_recent: {
                let mut r = lock(&self.rtt_recent);
                if r.since.elapsed() >= RTT_WINDOW {
                    r.last = (!r.current.is_empty()).then(|| Percentiles::of_us(&r.current));
                    r.current.reset();
                    r.since = Instant::now();
                }
                r.last
            },
        }
    }
}

/// Runs the bots until the measured period is over: [`run_until`] with no
/// other way to stop.
pub async fn run(
    config: BotConfig,
    progress: impl FnMut(&Progress),
) -> Result<BotReport, BotConfigError> {
    run_until(config, progress, std::future::pending::<()>()).await
}

/// Runs `config.count` bots: starts them (at most `logins_in_flight` in the
/// login phase at once), waits until each has entered the world or failed,
/// lets them play for `config.duration`, stops them and reports. `shutdown`
/// (e.g. Ctrl-C) ends the run early, with a report of what was measured.
/// `progress` is called about four times a second from this task.
///
/// Needs a tokio runtime with the time and net drivers; a multi-thread one
/// for more than a few hundred bots.
pub async fn run_until(
    config: BotConfig,
    mut progress: impl FnMut(&Progress),
    shutdown: impl Future<Output = ()>,
) -> Result<BotReport, BotConfigError> {
    config.validate()?;
    let http = Http::new(
        &config.login,
        config.request_timeout,
        config.logins_in_flight.max(4),
    );
    let shared = Arc::new(Shared {
        http,
        slots: Arc::new(Semaphore::new(config.logins_in_flight)),
        stop: CancellationToken::new(),
        n: Counters::default(),
        rtt: Mutex::new(histogram_us()),
        rtt_ramp: Mutex::new(histogram_us()),
        rtt_recent: Mutex::new(RecentRtt {
            current: histogram_us(),
            since: Instant::now(),
            last: None,
        }),
        window: std::sync::atomic::AtomicU8::new(WINDOW_RAMP_UP),
        rtt_warmup: Mutex::new(histogram_us()),
        login: Mutex::new(histogram_us()),
        enter: Mutex::new(histogram_us()),
        failures: Mutex::new(Tally::default()),
        drops: Mutex::new(Tally::default()),
        config,
    });
    let started = Instant::now();
    let sampler = tokio::spawn(sample_status(shared.clone()));
    let mut bots = JoinSet::new();
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = Phase::Connecting;
    let mut measure_start: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    let mut stopping_since: Option<Instant> = None;
    let mut warm_until: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        // Spawner: the next bot starts when a login slot is free.
        let spawn = async {
            if next < shared.config.count && phase == Phase::Connecting {
                shared.slots.clone().acquire_owned().await.ok()
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            permit = spawn => {
                if let Some(permit) = permit {
                    let index = shared.config.first_index + next;
                    next += 1;
                    add(&shared.n.started, 1);
                    bots.spawn(bot(shared.clone(), index, Some(permit)));
                }
            }
            Some(_) = bots.join_next(), if !bots.is_empty() => {}
            () = &mut shutdown, if phase != Phase::Stopping => {
                shared.stop.cancel();
                phase = Phase::Stopping;
                stopping_since = Some(Instant::now());
                if measure_start.is_none() {
                    measure_start = Some(Instant::now());
                }
                stop_at = Some(Instant::now());
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                match phase {
                    Phase::Connecting if get(&shared.n.settled) >= shared.config.count as u64 => {
                        phase = Phase::WarmingUp;
                        shared.window.store(WINDOW_WARMUP, Ordering::Relaxed);
                        warm_until = Some(now + shared.config.warmup);
                    }
                    _ => {}
                }
                match phase {
                    Phase::WarmingUp if warm_until.is_some_and(|t| now >= t) => {
                        phase = Phase::Running;
                        shared.window.store(WINDOW_MEASURED, Ordering::Relaxed);
                        measure_start = Some(now);
                        stop_at = Some(now + shared.config.duration);
                    }
                    Phase::Running if stop_at.is_some_and(|t| now >= t) => {
                        shared.window.store(WINDOW_AFTER, Ordering::Relaxed);
                        shared.stop.cancel();
                        phase = Phase::Stopping;
                        stopping_since = Some(now);
                    }
                    _ => {}
                }
                let remaining = match phase {
                    Phase::WarmingUp => warm_until
                        .map(|t| t.saturating_duration_since(now) + shared.config.duration),
                    Phase::Running => stop_at.map(|t| t.saturating_duration_since(now)),
                    _ => None,
                };
                progress(&shared.progress(phase, started.elapsed(), remaining));
                // Bots say goodbye within a second or two; do not wait forever.
                if stopping_since.is_some_and(|t| now.duration_since(t) > Duration::from_secs(10)) {
                    bots.abort_all();
                }
            }
        }
        if phase == Phase::Stopping && bots.is_empty() {
            break;
        }
        // Every bot is gone before the period even started (all failed or
        // dropped): nothing left to measure.
        if phase != Phase::Stopping && next >= shared.config.count && bots.is_empty() {
            shared.stop.cancel();
            if measure_start.is_none() {
                measure_start = Some(Instant::now());
            }
            stop_at = Some(Instant::now());
            break;
        }
    }
    while bots.join_next().await.is_some() {}
    // Stopped early (shutdown) before every bot had its turn to log in.
    let never_started = (shared.config.count - next) as u64;
    if never_started > 0 {
        add(&shared.n.failed, never_started);
        lock(&shared.failures).add_n("stopped before starting", never_started);
    }
    sampler.abort();
    let _ = sampler.await;
    let measured = match (measure_start, stop_at) {
        (Some(a), Some(b)) => b.min(Instant::now()).saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    progress(&shared.progress(Phase::Stopping, started.elapsed(), None));
    Ok(report(&shared, measured))
}

fn report(shared: &Shared, measured: Duration) -> BotReport {
    let n = &shared.n;
    let client_seconds = get(&n.world_micros) as f64 / 1e6;
    let per_client = |total: u64| {
        if client_seconds > 0.0 {
            (total as f64 / client_seconds * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let tick_bits = get(&n.tick_p99_bits);
    BotReport {
        bots: shared.config.count as u64,
        connected: get(&n.connected),
        failed: get(&n.failed),
        dropped: get(&n.dropped),
        rtt_ms: Percentiles::of_us(&lock(&shared.rtt)),
        rtt_ms_ramp_up: Percentiles::of_us(&lock(&shared.rtt_ramp)),
        rtt_ms_warmup: Percentiles::of_us(&lock(&shared.rtt_warmup)),
        warmup_s: shared.config.warmup.as_secs_f64(),
        bytes_per_s_per_client: UpDown {
            up: per_client(get(&n.bytes_up)),
            down: per_client(get(&n.bytes_down)),
        },
        payload_bytes_per_s_per_client: UpDown {
            up: per_client(get(&n.payload_up)),
            down: per_client(get(&n.payload_down)),
        },
        datagrams_per_s_per_client: UpDown {
            up: per_client(get(&n.datagrams_up)),
            down: per_client(get(&n.datagrams_down)),
        },
        server_tick_p99_ms: (get(&n.status_samples) > 0).then(|| f64::from_bits(tick_bits)),
        behaviour: shared.config.behaviour,
        seed: shared.config.seed,
        duration_s: (measured.as_secs_f64() * 1000.0).round() / 1000.0,
        client_seconds: (client_seconds * 1000.0).round() / 1000.0,
        registered: get(&n.registered),
        logins: get(&n.logins),
        login_ms: Percentiles::of_us(&lock(&shared.login)),
        enter_ms: Percentiles::of_us(&lock(&shared.enter)),
        rtt_samples: get(&n.rtt_samples),
        rtt_unacked: get(&n.rtt_unacked),
        inputs_sent: get(&n.inputs_sent),
        state_packets: get(&n.state_packets),
        decode_errors: get(&n.decode_errors),
        client_queue_drops: get(&n.client_queue_drops),
        server_errors: get(&n.server_errors),
        transfers: get(&n.transfers),
        chat_sent: get(&n.chat_sent),
        chat_received: get(&n.chat_received),
        churn_cycles: get(&n.churn_cycles),
        churn_failed: get(&n.churn_failed),
        status_samples: get(&n.status_samples),
        status_errors: get(&n.status_errors),
        failures: lock(&shared.failures).0.clone(),
        drops: lock(&shared.drops).0.clone(),
    }
}

/// Samples `/v1/status` until aborted; keeps the worst scene tick p99.
async fn sample_status(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.status_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match shared
            .http
            .get_json::<serde_json::Value>("/v1/status")
            .await
        {
            Ok(status) => {
                add(&shared.n.status_samples, 1);
                let worst = worst_tick_p99(&status);
                let bits = &shared.n.tick_p99_bits;
                let _ = bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    (worst > f64::from_bits(old)).then(|| worst.to_bits())
                });
            }
            Err(_) => add(&shared.n.status_errors, 1),
        }
    }
}

/// The largest `scenes[].tick_p99_ms` of a `/v1/status` answer (0 if none).
/// Read loosely, so new status fields never break a bot run.
pub fn worst_tick_p99(status: &serde_json::Value) -> f64 {
    status
        .get("scenes")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|scene| scene.get("tick_p99_ms").and_then(|v| v.as_f64()))
        .filter(|v| v.is_finite() && *v >= 0.0)
        .fold(0.0, f64::max)
}

/// Checks that the login API answers `GET /v1/status` (a quick, clear error
/// for a wrong `--login` before any bot starts).
pub async fn check_reachable(config: &BotConfig) -> Result<(), String> {
    Http::new(&config.login, config.request_timeout, 1)
        .get_json::<serde_json::Value>("/v1/status")
        .await
        .map(|_| ())
        .map_err(|e| format!("{}/v1/status: {e}", config.login))
}

// ---------------------------------------------------------------------------
// One bot

/// What a successful login gives.
struct Admitted {
    token: String,
}

/// How a stay in the world ended.
enum Outcome {
    /// The run is over (or the bot was told to stop).
    Stopped,
    /// The server or the network ended it.
    Dropped(String),
    /// Churn: left and disconnected on purpose; log in again.
    Cycle,
}

/// How a connect attempt failed.
enum Failure {
    /// The run stopped meanwhile: not the bot's fault.
    Stopped,
    Reason(String),
}

async fn bot(shared: Arc<Shared>, index: usize, mut permit: Option<OwnedSemaphorePermit>) {
    let mut rng = SceneRng::new(mix(shared.config.seed, index as u64, 0));
    // Sequence numbers never restart, so an ack from before a re-entry can
    // never match an input sent after it.
    let mut seq = 0u32;
    let mut entered_once = false;
    loop {
        let begun = Instant::now();
        let attempt = connect_and_enter(&shared, index, begun, permit.take());
        let session = tokio::select! {
            biased;
            () = shared.stop.cancelled() => Err(Failure::Stopped),
            r = attempt => r,
        };
        let mut session = match session {
            Ok(s) => s,
            Err(Failure::Stopped) => {
                if !entered_once {
                    // Never got in before the run ended (only on an early stop).
                    shared.fail("stopped before entering");
                }
                return;
            }
            Err(Failure::Reason(reason)) => {
                if entered_once {
                    add(&shared.n.churn_failed, 1);
                    lock(&shared.failures).add(&format!("churn re-login: {reason}"));
                } else {
                    shared.fail(&reason);
                }
                return;
            }
        };
        record_us(&mut lock(&shared.enter), begun.elapsed());
        if !entered_once {
            entered_once = true;
            add(&shared.n.connected, 1);
            add(&shared.n.settled, 1);
        }
        add(&shared.n.in_world, 1);
        let outcome = session.play(&shared, &mut rng, &mut seq).await;
        shared.n.in_world.fetch_sub(1, Ordering::Relaxed);
        session.finish(&shared);
        match outcome {
            Outcome::Stopped => return,
            Outcome::Dropped(reason) => {
                shared.drop_bot(&reason);
                return;
            }
            Outcome::Cycle => {
                add(&shared.n.churn_cycles, 1);
            }
        }
    }
}

/// Logs in (registering the account if needed), connects to the gate,
/// creates an avatar if there is none, selects it and waits for `Entered`.
async fn connect_and_enter(
    shared: &Shared,
    index: usize,
    begun: Instant,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Session, Failure> {
    let admitted = {
        // Hold a login slot for the whole login (a churn re-login takes one too).
        let _permit = match permit {
            Some(p) => p,
            None => shared
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Failure::Stopped)?,
        };
        match tokio::time::timeout(shared.config.login_timeout, login(shared, index)).await {
            Ok(r) => r?,
            Err(_) => return Err(Failure::Reason("login: timed out".into())),
        }
    };
    add(&shared.n.logins, 1);
    record_us(&mut lock(&shared.login), begun.elapsed());
    let mut stage = EnterStage::Connecting;
    let entered = tokio::time::timeout(
        shared.config.enter_timeout,
        enter(admitted, index, &mut stage),
    )
    .await;
    match entered {
        Ok(r) => r.map_err(Failure::Reason),
        Err(_) => Err(Failure::Reason(format!(
            "enter: timed out {}",
            stage.waiting_for()
        ))),
    }
}

/// Pause before retrying: the server's hint, else 250 ms doubling to 4 s,
/// with ±25 % jitter so retries do not arrive in lockstep.
fn backoff(hint_ms: Option<u64>, attempt: u32, jitter: u64) -> Duration {
    let base = hint_ms
        .unwrap_or_else(|| 250u64.saturating_mul(1 << attempt.min(4)))
        .clamp(50, 10_000);
    let spread = base / 2;
    let offset = if spread == 0 { 0 } else { jitter % spread };
    Duration::from_millis(base - base / 4 + offset)
}

async fn login(shared: &Shared, index: usize) -> Result<Admitted, Failure> {
    let http = &shared.http;
    let email = bot_email(index);
    let password = bot_password(index);
    let request = LoginRequest {
        email: Some(email.clone()),
        password: Some(password.clone()),
        resume_key: None,
        client_version: CLIENT_PROTOCOL,
    };
    let jitter = mix(shared.config.seed, index as u64, 1);
    let mut registered = false;
    let mut attempt = 0u32;
    loop {
        let answer = match http.post::<_, LoginResponse>("/v1/login", &request).await {
            Err(HttpError::Api { status: 401, .. }) if !registered => {
                register(shared, index, &email, &password).await?;
                registered = true;
                continue;
            }
            Err(e) => match e.retry() {
                Some(hint) => {
                    tokio::time::sleep(backoff(hint, attempt, jitter.rotate_left(attempt))).await;
                    attempt += 1;
                    continue;
                }
                None => return Err(Failure::Reason(format!("login: {}", e.reason()))),
            },
            Ok(answer) => answer,
        };
        return match answer {
            LoginResponse::Ok { token, .. } => Ok(Admitted { token }),
            LoginResponse::Queued {
                ticket, poll_ms, ..
            } => poll(shared, ticket, poll_ms, jitter).await,
        };
    }
}

async fn register(
    shared: &Shared,
    index: usize,
    email: &str,
    password: &str,
) -> Result<(), Failure> {
    let request = RegisterRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        nickname: Some(bot_avatar_name(index)),
    };
    let jitter = mix(shared.config.seed, index as u64, 2);
    let mut attempt = 0u32;
    loop {
        match shared
            .http
            .post::<_, RegisterResponse>("/v1/register", &request)
            .await
        {
            Ok(_) => {
                add(&shared.n.registered, 1);
                return Ok(());
            }
            Err(HttpError::Api { status: 409, .. }) => return Ok(()),
            Err(e) => match e.retry() {
                Some(hint) => {
                    tokio::time::sleep(backoff(hint, attempt, jitter.rotate_left(attempt))).await;
                    attempt += 1;
                }
                None => return Err(Failure::Reason(format!("register: {}", e.reason()))),
            },
        }
    }
}

async fn poll(
    shared: &Shared,
    ticket: String,
    poll_ms: u64,
    jitter: u64,
) -> Result<Admitted, Failure> {
    let request = PollRequest { ticket };
    let mut wait = poll_ms;
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(wait.clamp(50, 5_000))).await;
        match shared
            .http
            .post::<_, LoginResponse>("/v1/login/poll", &request)
            .await
        {
            Ok(LoginResponse::Ok { token, .. }) => return Ok(Admitted { token }),
            Ok(LoginResponse::Queued { poll_ms, .. }) => wait = poll_ms,
            Err(e) => match e.retry() {
                Some(hint) => {
                    wait = backoff(hint, attempt, jitter.rotate_left(attempt)).as_millis() as u64;
                    attempt += 1;
                }
                None => return Err(Failure::Reason(format!("queue poll: {}", e.reason()))),
            },
        }
    }
}

/// A bot in the world.
struct Session {
    client: ClientConn,
    index: usize,
    entered_at: Instant,
    /// `ClientStats` datagram counts when the bot entered.
    datagrams_at_entry: (u64, u64),
    /// UDP payload bytes (sent, received) when the bot entered.
    wire_at_entry: (u64, u64),
    bytes_up: u64,
    bytes_down: u64,
    kicked: Option<String>,
    disconnected: bool,
}

/// How far an entry got: named in the failure when it times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnterStage {
    Connecting,
    Connected,
    Creating,
    Selected,
}

impl EnterStage {
    fn waiting_for(self) -> &'static str {
        match self {
            EnterStage::Connecting => "connecting to the gate",
            EnterStage::Connected => "waiting for the avatar list",
            EnterStage::Creating => "waiting for the new avatar",
            EnterStage::Selected => "waiting to enter the world",
        }
    }
}

async fn enter(
    admitted: Admitted,
    index: usize,
    stage: &mut EnterStage,
) -> Result<Session, String> {
    let bytes = from_hex(&admitted.token).map_err(|_| "login: token is not hex".to_owned())?;
    let token = token_from_bytes(&bytes).map_err(|_| "login: token does not decode".to_owned())?;
    let mut client = ClientConn::connect(token, ClientConfig::default())
        .await
        .map_err(|e| format!("gate: {e}"))?;
    let mut avatar: Option<u64> = None;
    let mut created = false;
    let outcome = loop {
        let Some(event) = client.recv().await else {
            break Err("gate: client stopped".to_owned());
        };
        let payload = match event {
            ClientEvent::Connected => {
                *stage = EnterStage::Connected;
                continue;
            }
            ClientEvent::Disconnected(reason) => break Err(format!("gate: {reason:?}")),
            ClientEvent::Message {
                channel: Channel::Unreliable,
                ..
            } => continue,
            ClientEvent::Message { payload, .. } => payload,
        };
        let Ok(msg) = ServerMsg::decode(&payload) else {
            break Err("gate: undecodable message".to_owned());
        };
        match msg {
            ServerMsg::Avatars(list) if avatar.is_none() => {
                if let Some(first) = list.first() {
                    avatar = Some(first.id);
                    *stage = EnterStage::Selected;
                    if client
                        .send(
                            Channel::Reliable,
                            ClientMsg::Select { avatar: first.id }.encode(),
                        )
                        .is_err()
                    {
                        break Err("gate: send failed".to_owned());
                    }
                } else if !created {
                    created = true;
                    *stage = EnterStage::Creating;
                    let name = bot_avatar_name(index);
                    if client
                        .send(Channel::Reliable, ClientMsg::CreateAvatar { name }.encode())
                        .is_err()
                    {
                        break Err("gate: send failed".to_owned());
                    }
                } else {
                    break Err("gate: avatar list still empty after create".to_owned());
                }
            }
            ServerMsg::Entered { .. } => break Ok(()),
            ServerMsg::Error { code, text } => break Err(format!("gate error: {code}: {text}")),
            ServerMsg::Kicked { reason } => break Err(format!("kicked: {reason}")),
            _ => {}
        }
    };
    match outcome {
        Ok(()) => {
            let stats = client.stats();
            let datagrams_at_entry = (
                stats.datagrams_out.load(Ordering::Relaxed),
                stats.datagrams_in.load(Ordering::Relaxed),
            );
            let wire_at_entry = (
                stats.bytes_out.load(Ordering::Relaxed),
                stats.bytes_in.load(Ordering::Relaxed),
            );
            Ok(Session {
                client,
                index,
                entered_at: Instant::now(),
                datagrams_at_entry,
                wire_at_entry,
                bytes_up: 0,
                bytes_down: 0,
                kicked: None,
                disconnected: false,
            })
        }
        Err(reason) => {
            let _ = client.disconnect();
            Err(reason)
        }
    }
}

/// A random walking direction (unit vector).
fn random_dir(rng: &mut SceneRng) -> [f32; 2] {
    let angle = rng.range_f32(0.0, std::f32::consts::TAU);
    [angle.cos(), angle.sin()]
}

fn jittered(rng: &mut SceneRng, lo_s: f32, hi_s: f32) -> Duration {
    Duration::from_secs_f32(rng.range_f32(lo_s, hi_s))
}

impl Session {
    fn send(&mut self, shared: &Shared, channel: Channel, payload: Vec<u8>) -> bool {
        let len = payload.len() as u64;
        match self.client.send(channel, payload) {
            Ok(()) => {
                self.bytes_up += len;
                true
            }
            Err(tessera_gate::ClientSendError::QueueFull) => {
                add(&shared.n.client_queue_drops, 1);
                true
            }
            Err(tessera_gate::ClientSendError::Closed) => false,
        }
    }

    async fn play(&mut self, shared: &Shared, rng: &mut SceneRng, seq: &mut u32) -> Outcome {
        let behaviour = shared.config.behaviour;
        let period = Duration::from_secs_f64(1.0 / f64::from(shared.config.input_hz));
        // Start inputs at a random phase so bots do not send in lockstep.
        let first = tokio::time::Instant::now() + period.mul_f32(rng.next_f32());
        let mut inputs = tokio::time::interval_at(first, period);
        inputs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ring = RttRing::new(RTT_RING);
        let mut batch: Vec<Duration> = Vec::with_capacity(64);
        // The window the batch's samples were taken in: a batch never
        // straddles two (the ramp-up, warm-up and measured period are apart).
        let mut batch_window = shared.window.load(Ordering::Relaxed);
        let mut dir = random_dir(rng);
        let now = tokio::time::Instant::now();
        let mut turn_at = now + jittered(rng, 2.0, 5.0);
        let mut chat_at = now + jittered(rng, 1.0, 9.0);
        let mut leave_at = now + jittered(rng, 5.0, 15.0);
        let mut leaving: Option<tokio::time::Instant> = None;
        let mut chats = 0u64;
        let outcome = loop {
            let chat_due = behaviour == Behaviour::Chat;
            let leave_due = behaviour == Behaviour::Churn && leaving.is_none();
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break Outcome::Stopped,
                event = self.client.recv() => {
                    let Some(event) = event else {
                        break Outcome::Dropped("gate client stopped".into());
                    };
                    match event {
                        ClientEvent::Message { channel: Channel::Unreliable, payload } => {
                            self.bytes_down += payload.len() as u64;
                            match StatePacket::decode(&payload) {
                                Ok(packet) => {
                                    add(&shared.n.state_packets, 1);
                                    let window = shared.window.load(Ordering::Relaxed);
                                    if window != batch_window {
                                        flush_rtt(shared, &mut batch, batch_window);
                                        batch_window = window;
                                    }
                                    ring.acked(packet.ack, Instant::now(), |rtt| batch.push(rtt));
                                    if batch.len() >= 48 {
                                        flush_rtt(shared, &mut batch, batch_window);
                                    }
                                }
                                Err(_) => add(&shared.n.decode_errors, 1),
                            }
                        }
                        ClientEvent::Message { payload, .. } => {
                            self.bytes_down += payload.len() as u64;
                            match ServerMsg::decode(&payload) {
                                Ok(ServerMsg::Chat { .. }) => add(&shared.n.chat_received, 1),
                                Ok(ServerMsg::Kicked { reason }) => self.kicked = Some(reason),
                                Ok(ServerMsg::Error { .. }) => add(&shared.n.server_errors, 1),
                                Ok(ServerMsg::Moving { .. }) => add(&shared.n.transfers, 1),
                                Ok(ServerMsg::Left { .. }) if leaving.is_some() => break Outcome::Cycle,
                                Ok(_) => {}
                                Err(_) => add(&shared.n.decode_errors, 1),
                            }
                        }
                        ClientEvent::Connected => {}
                        ClientEvent::Disconnected(reason) => {
                            self.disconnected = true;
                            if leaving.is_some() {
                                break Outcome::Cycle;
                            }
                            break Outcome::Dropped(match self.kicked.take() {
                                Some(kick) => format!("kicked: {kick}"),
                                None => format!("disconnected: {reason:?}"),
                            });
                        }
                    }
                }
                _ = inputs.tick(), if leaving.is_none() => {
                    let now = tokio::time::Instant::now();
                    if now >= turn_at {
                        dir = random_dir(rng);
                        turn_at = now + jittered(rng, 2.0, 5.0);
                    }
                    *seq = seq.wrapping_add(1);
                    let input = Input {
                        seq: *seq,
                        dir,
                        mode: MoveMode::Walk,
                        heading: dir[1].atan2(dir[0]),
                        action: 0,
                        mount: 0,
                    };
                    if !self.send(shared, Channel::Unreliable, ClientMsg::Input(input).encode()) {
                        break Outcome::Dropped("gate client stopped".into());
                    }
                    add(&shared.n.inputs_sent, 1);
                    ring.sent(*seq, Instant::now());
                }
                () = tokio::time::sleep_until(chat_at), if chat_due => {
                    chats += 1;
                    chat_at = tokio::time::Instant::now() + jittered(rng, 4.0, 6.0);
                    let to = if rng.next_f32() < 0.1 { ChatTarget::Global } else { ChatTarget::Scene };
                    let text = format!("Bot{} says hello #{chats}", self.index);
                    if !self.send(shared, Channel::Reliable, ClientMsg::Chat { to, text }.encode()) {
                        break Outcome::Dropped("gate client stopped".into());
                    }
                    add(&shared.n.chat_sent, 1);
                }
                () = tokio::time::sleep_until(leave_at), if leave_due => {
                    if !self.send(shared, Channel::Reliable, ClientMsg::Leave.encode()) {
                        break Outcome::Dropped("gate client stopped".into());
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    leaving = Some(deadline);
                    leave_at = deadline;
                }
                () = tokio::time::sleep_until(leaving.unwrap_or(leave_at)), if leaving.is_some() => {
                    // No `Left` within 5 s: the server lost it; count a drop.
                    break Outcome::Dropped("no answer to Leave".into());
                }
            }
        };
        flush_rtt(shared, &mut batch, batch_window);
        add(&shared.n.rtt_unacked, ring.unacked());
        outcome
    }

    /// Says goodbye (unless already disconnected), closes the client and
    /// adds this stay's traffic to the run's totals.
    fn finish(self, shared: &Shared) {
        let Session {
            mut client,
            entered_at,
            datagrams_at_entry,
            wire_at_entry,
            bytes_up,
            bytes_down,
            disconnected,
            ..
        } = self;
        let world = entered_at.elapsed();
        let stats = client.stats().clone();
        if !disconnected {
            // The goodbye goes out now; the socket closes with `client`.
            let _ = client.disconnect();
        }
        drop(client);
        let n = &shared.n;
        add(
            &n.world_micros,
            u64::try_from(world.as_micros()).unwrap_or(u64::MAX),
        );
        add(&n.payload_up, bytes_up);
        add(&n.payload_down, bytes_down);
        add(
            &n.bytes_up,
            stats
                .bytes_out
                .load(Ordering::Relaxed)
                .saturating_sub(wire_at_entry.0),
        );
        add(
            &n.bytes_down,
            stats
                .bytes_in
                .load(Ordering::Relaxed)
                .saturating_sub(wire_at_entry.1),
        );
        add(
            &n.datagrams_up,
            stats
                .datagrams_out
                .load(Ordering::Relaxed)
                .saturating_sub(datagrams_at_entry.0),
        );
        add(
            &n.datagrams_down,
            stats
                .datagrams_in
                .load(Ordering::Relaxed)
                .saturating_sub(datagrams_at_entry.1),
        );
        add(
            &n.client_queue_drops,
            stats.events_dropped.load(Ordering::Relaxed),
        );
    }
}

/// Adds a bot's batch of round trips, taken in `window`, to the run's
/// histograms.
fn flush_rtt(shared: &Shared, batch: &mut Vec<Duration>, window: u8) {
    if batch.is_empty() {
        return;
    }
    add(&shared.n.rtt_samples, batch.len() as u64);
    {
        let mut recent = lock(&shared.rtt_recent);
        for &rtt in batch.iter() {
            record_us(&mut recent.current, rtt);
        }
    }
    let mut h = match window {
        WINDOW_RAMP_UP => lock(&shared.rtt_ramp),
        WINDOW_WARMUP => lock(&shared.rtt_warmup),
        WINDOW_MEASURED => lock(&shared.rtt),
        // After the measured period: the bots are leaving.
        _ => {
            batch.clear();
            return;
        }
    };
    for rtt in batch.drain(..) {
        record_us(&mut h, rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::login::ApiError;

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
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(v["bots"], 3);
        assert_eq!(v["rtt_ms"]["p50"], 40.0);
        assert_eq!(v["rtt_ms"]["p99"], 80.5);
        assert!(v["bytes_per_s_per_client"]["up"].is_number());
        assert!(v["bytes_per_s_per_client"]["down"].is_number());
        assert_eq!(v["server_tick_p99_ms"], 3.25);
        assert_eq!(v["behaviour"], "wander");
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
    }

    #[test]
    fn config_validation_names_the_bad_argument() {
        let ok = BotConfig::new(1, DEFAULT_LOGIN, 60, Behaviour::Wander).expect("valid");
        assert_eq!(ok.login, "http://127.0.0.1:7080");
        assert!(BotConfig::new(MAX_BOTS, "http://h:1/", 3600, Behaviour::Churn).is_ok());
        assert_eq!(
            BotConfig::new(0, DEFAULT_LOGIN, 60, Behaviour::Wander).err(),
            Some(BotConfigError::Count(0))
        );
        assert_eq!(
            BotConfig::new(MAX_BOTS + 1, DEFAULT_LOGIN, 60, Behaviour::Wander).err(),
            Some(BotConfigError::Count(MAX_BOTS + 1))
        );
        assert_eq!(
            BotConfig::new(1, DEFAULT_LOGIN, 0, Behaviour::Wander).err(),
            Some(BotConfigError::Duration(0))
        );
        assert_eq!(
            BotConfig::new(1, DEFAULT_LOGIN, 3601, Behaviour::Wander).err(),
            Some(BotConfigError::Duration(3601))
        );
        let mut long_warmup = ok.clone();
        long_warmup.warmup = Duration::from_secs(3601);
        assert_eq!(
            long_warmup.validate().err(),
            Some(BotConfigError::Warmup(3601))
        );
        let mut no_warmup = ok.clone();
        no_warmup.warmup = Duration::ZERO;
        assert!(no_warmup.validate().is_ok());
        let msg = BotConfig::new(0, DEFAULT_LOGIN, 60, Behaviour::Wander)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("--count") && msg.contains("10000"), "{msg}");
        for bad in [
            "",
            "127.0.0.1:7080",
            "https://127.0.0.1:7080",
            "ftp://x",
            "http://",
            "http://h:1/v1/login",
            "http://h:1/?q=1",
            "http://user:pw@h:1",
            "http://h:1#frag",
            "not a url",
        ] {
            let err = normalize_login_url(bad);
            assert!(
                matches!(err, Err(BotConfigError::Url { .. })),
                "{bad:?} accepted: {err:?}"
            );
        }
        assert_eq!(
            normalize_login_url(" http://[::1]:7080/ ").as_deref(),
            Ok("http://[::1]:7080")
        );
        assert_eq!("churn".parse::<Behaviour>(), Ok(Behaviour::Churn));
        assert!("dance".parse::<Behaviour>().is_err());
        let mut tuned = ok.clone();
        tuned.logins_in_flight = 0;
        assert_eq!(
            tuned.validate(),
            Err(BotConfigError::Zero("logins in flight"))
        );
        let mut far = ok;
        far.first_index = u32::MAX as usize;
        assert_eq!(far.validate(), Err(BotConfigError::Index));
    }

    #[test]
    fn bot_credentials_pass_the_account_rules() {
        use tessera_persistence::validate::{check_avatar_name, check_password, normalize_email};
        for i in [0, 7, 9_999, 123_456] {
            let email = normalize_email(&bot_email(i)).expect("valid email");
            check_password(&bot_password(i), &email).expect("valid password");
            assert!(!bot_password(i).contains(&format!("bot{i}@")));
            check_avatar_name(&bot_avatar_name(i)).expect("valid avatar name");
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

    #[test]
    fn worst_tick_is_read_loosely() {
        let v = serde_json::json!({
            "scene_servers": [],
            "scenes": [
                {"name": "a", "tick_p99_ms": 2.5},
                {"name": "b", "tick_p99_ms": 7.0, "new_field": 1},
                {"name": "c"},
                {"name": "d", "tick_p99_ms": "junk"}
            ]
        });
        assert_eq!(worst_tick_p99(&v), 7.0);
        assert_eq!(worst_tick_p99(&serde_json::json!({})), 0.0);
        assert_eq!(worst_tick_p99(&serde_json::json!([1, 2])), 0.0);
    }

    #[test]
    fn backoff_honours_the_hint_and_stays_bounded() {
        for attempt in 0..40 {
            for jitter in [0, 1, 77, u64::MAX] {
                let d = backoff(None, attempt, jitter);
                assert!(
                    d >= Duration::from_millis(50) && d <= Duration::from_secs(13),
                    "{d:?}"
                );
                let h = backoff(Some(1000), attempt, jitter);
                assert!(h >= Duration::from_millis(750) && h < Duration::from_millis(1250));
            }
        }
        assert!(backoff(Some(u64::MAX), 0, 3) <= Duration::from_secs(13));
        assert!(backoff(Some(0), 0, 3) >= Duration::from_millis(37));
    }

    /// The run loop against a fake login API that admits nobody: every bot
    /// fails with the server's reason (after backing off a 429), the status
    /// is sampled, and the run ends promptly without a measured period.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bots_that_cannot_log_in_fail_with_the_reason() {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        use axum::{Json, Router};

        let registers = Arc::new(AtomicU64::new(0));
        let seen = registers.clone();
        let api_error = |status: StatusCode, code: &str, retry: Option<u64>| {
            (
                status,
                Json(ApiError {
                    code: code.into(),
                    error: "test".into(),
                    retry_after_ms: retry,
                }),
            )
        };
        let app = Router::new()
            .route(
                "/v1/login",
                post(move || async move {
                    api_error(StatusCode::UNAUTHORIZED, "bad_credentials", None)
                }),
            )
            .route(
                "/v1/register",
                post(move || async move {
                    // The very first registration is rate limited: retried.
                    if seen.fetch_add(1, Ordering::Relaxed) == 0 {
                        api_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(10))
                    } else {
                        api_error(StatusCode::BAD_REQUEST, "invalid", None)
                    }
                }),
            )
            .route(
                "/v1/status",
                get(|| async {
                    Json(serde_json::json!({"scenes": [{"name": "field", "tick_p99_ms": 1.5}]}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let mut config =
            BotConfig::new(5, &format!("http://{addr}"), 30, Behaviour::Wander).expect("valid");
        config.status_interval = Duration::from_millis(20);
        config.logins_in_flight = 2;
        check_reachable(&config).await.expect("reachable");
        let mut calls = 0;
        let started = Instant::now();
        let report = tokio::time::timeout(Duration::from_secs(20), run(config, |_| calls += 1))
            .await
            .expect("ends without waiting for the period")
            .expect("valid config");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(calls >= 1, "progress reported");
        assert_eq!((report.bots, report.connected, report.failed), (5, 0, 5));
        assert_eq!(report.dropped, 0);
        assert_eq!(
            report.failures.get("register: invalid"),
            Some(&5),
            "{report:?}"
        );
        assert_eq!(
            registers.load(Ordering::Relaxed),
            6,
            "one retry after the 429"
        );
        assert_eq!(report.registered, 0);
        assert_eq!(report.rtt_samples, 0);
        assert_eq!(report.rtt_ms, Percentiles::default());
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_login_api_is_reported_before_any_bot_starts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let config =
            BotConfig::new(1, &format!("http://{addr}"), 1, Behaviour::Wander).expect("valid");
        let err = check_reachable(&config).await.expect_err("nothing listens");
        assert!(err.contains("/v1/status"), "{err}");
    }
}
