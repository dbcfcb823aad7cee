//! What every bot of a run shares ([`RunShared`]): the settings, the HTTP
//! client, login slots, the stop signal, and the counters, histograms and
//! tallies the report is made from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tessera_link::lock;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::config::BotConfig;
use super::measure::{CurrentWindow, RecentRtt, RttWindow, Tally, histogram_us, record_us};
use crate::http_client::HttpClient;

pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(super) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters shared by every bot of a run.
#[derive(Default)]
pub(super) struct BotCounters {
    pub(super) started: AtomicU64,
    pub(super) in_world: AtomicU64,
    pub(super) connected: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// Bots that have entered once or failed (the connect phase ends when
    /// this reaches the count).
    pub(super) settled: AtomicU64,
    pub(super) registered: AtomicU64,
    /// Successful logins with the password, and with a resume key.
    pub(super) logins_password: AtomicU64,
    pub(super) logins_resume: AtomicU64,
    /// Resume keys the server refused (the bot then used its password).
    pub(super) resume_refused: AtomicU64,
    pub(super) rtt_samples: AtomicU64,
    pub(super) rtt_unacked: AtomicU64,
    pub(super) inputs_sent: AtomicU64,
    pub(super) state_packets: AtomicU64,
    pub(super) acks_sent: AtomicU64,
    pub(super) state_stale: AtomicU64,
    pub(super) state_foreign: AtomicU64,
    pub(super) loss_dropped: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    pub(super) client_queue_drops: AtomicU64,
    pub(super) server_errors: AtomicU64,
    pub(super) transfers: AtomicU64,
    pub(super) chat_sent: AtomicU64,
    pub(super) chat_received: AtomicU64,
    /// A game's actions sent, its events received, and of those the hits
    /// and kills that were this bot's (the fight behaviour).
    pub(super) game_actions: AtomicU64,
    pub(super) game_events: AtomicU64,
    pub(super) game_hits: AtomicU64,
    pub(super) game_kills: AtomicU64,
    pub(super) churn_cycles: AtomicU64,
    pub(super) churn_failed: AtomicU64,
    pub(super) bytes_up: AtomicU64,
    pub(super) bytes_down: AtomicU64,
    pub(super) payload_up: AtomicU64,
    pub(super) payload_down: AtomicU64,
    pub(super) datagrams_up: AtomicU64,
    pub(super) datagrams_down: AtomicU64,
    pub(super) world_micros: AtomicU64,
    pub(super) status_samples: AtomicU64,
    pub(super) status_errors: AtomicU64,
    /// The worst tick p99 seen in the measured period, as f64 bits, and
    /// how many samples it saw.
    pub(super) tick_p99_bits: AtomicU64,
    pub(super) tick_samples: AtomicU64,
    /// The same before it (bots logging in, entering, warming up).
    pub(super) tick_p99_ramp_bits: AtomicU64,
    pub(super) tick_samples_ramp: AtomicU64,
}

/// Stale entries the view check keeps to re-examine (a few MB at most).
pub(super) const STALE_SEEN_CAP: usize = 1 << 20;

/// The state every bot of a run shares with the run driver.
pub(super) struct RunShared {
    pub(super) config: BotConfig,
    pub(super) http: HttpClient,
    /// Login slots: a bot holds one from its first login request to its
    /// token (start-up and churn re-logins alike).
    pub(super) slots: Arc<Semaphore>,
    pub(super) stop: CancellationToken,
    /// Cancelled once every bot has entered or failed: churn starts then,
    /// so no bot waits to get in behind bots coming back.
    pub(super) everyone_in: CancellationToken,
    pub(super) n: BotCounters,
    /// Which histogram round trips go to.
    pub(super) window: CurrentWindow,
    pub(super) rtt: Mutex<Histogram<u64>>,
    pub(super) rtt_ramp: Mutex<Histogram<u64>>,
    pub(super) rtt_warmup: Mutex<Histogram<u64>>,
    /// Round trips by window, for the progress line.
    pub(super) rtt_recent: Mutex<RecentRtt>,
    pub(super) login: Mutex<Histogram<u64>>,
    pub(super) enter: Mutex<Histogram<u64>>,
    pub(super) failures: Mutex<Tally>,
    pub(super) drops: Mutex<Tally>,
    /// The view check: set when the bots are to stand still and stop losing
    /// datagrams; then the truth they compare their views with; the sums.
    pub(super) settling: std::sync::atomic::AtomicBool,
    pub(super) truth: tokio::sync::watch::Sender<Option<Arc<super::view_check::Truth>>>,
    pub(super) view: Mutex<super::view_check::ViewCheck>,
    /// The entities found stale, by placement, for the third snapshot to
    /// tell which changed after the truth (at most [`STALE_SEEN_CAP`]).
    pub(super) stale_seen: Mutex<Vec<((u32, u64), tessera_proto::NetId)>>,
    /// The truth went out and the bots had their time to compare.
    pub(super) check_done: std::sync::atomic::AtomicBool,
}

impl RunShared {
    /// The gate client's settings for bot `index`: the run's loss, seeded
    /// per bot.
    pub(super) fn client_config(&self, index: usize) -> tessera_gate::ClientConfig {
        tessera_gate::ClientConfig {
            loss: self.config.loss,
            loss_seed: tessera_sim::rng::mix(self.config.seed, index as u64, 7),
            ..Default::default()
        }
    }

    /// The shared state of a run of `config` (already validated), in the
    /// ramp-up window.
    pub(super) fn new(config: BotConfig) -> Self {
        let http = HttpClient::new(
            &config.login,
            config.request_timeout,
            config.logins_in_flight.max(4),
        );
        Self {
            http,
            slots: Arc::new(Semaphore::new(config.logins_in_flight)),
            stop: CancellationToken::new(),
            everyone_in: CancellationToken::new(),
            n: BotCounters::default(),
            window: CurrentWindow::new(RttWindow::RampUp),
            rtt: Mutex::new(histogram_us()),
            rtt_ramp: Mutex::new(histogram_us()),
            rtt_warmup: Mutex::new(histogram_us()),
            rtt_recent: Mutex::new(RecentRtt::new()),
            login: Mutex::new(histogram_us()),
            enter: Mutex::new(histogram_us()),
            settling: std::sync::atomic::AtomicBool::new(false),
            truth: tokio::sync::watch::Sender::new(None),
            view: Mutex::new(super::view_check::ViewCheck::default()),
            stale_seen: Mutex::new(Vec::new()),
            check_done: std::sync::atomic::AtomicBool::new(false),
            failures: Mutex::new(Tally::default()),
            drops: Mutex::new(Tally::default()),
            config,
        }
    }

    /// A bot never entered, for `reason`.
    pub(super) fn fail(&self, reason: &str) {
        add(&self.n.failed, 1);
        add(&self.n.settled, 1);
        lock(&self.failures).add(reason);
    }

    /// A bot in the world was disconnected, for `reason`.
    pub(super) fn drop_bot(&self, reason: &str) {
        add(&self.n.dropped, 1);
        lock(&self.drops).add(reason);
    }

    /// Adds a bot's batch of round trips, taken in `window`, to the run's
    /// histograms, and empties it.
    pub(super) fn add_rtts(&self, window: RttWindow, batch: &mut Vec<Duration>) {
        if batch.is_empty() {
            return;
        }
        add(&self.n.rtt_samples, batch.len() as u64);
        {
            let mut recent = lock(&self.rtt_recent);
            for &rtt in batch.iter() {
                recent.record(rtt);
            }
        }
        let mut h = match window {
            RttWindow::RampUp => lock(&self.rtt_ramp),
            RttWindow::Warmup => lock(&self.rtt_warmup),
            RttWindow::Measured => lock(&self.rtt),
            RttWindow::After => {
                batch.clear();
                return;
            }
        };
        for rtt in batch.drain(..) {
            record_us(&mut h, rtt);
        }
    }
}
