//! The run driver: starts the bots (at most `logins_in_flight` logging in at
//! once), moves the run through its [`BotPhase`]s, reports progress, samples
//! the cluster's `/v1/status`, and adds up what the bots counted into a
//! [`BotReport`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_link::lock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::PollSemaphore;

use super::config::{BotConfig, BotConfigError};
use super::measure::RttWindow;
use super::report::{BotPhase, BotReport, Logins, Percentiles, Progress, UpDown};
use super::session::bot;
use super::shared::{RunShared, add, get};
use crate::http_client::HttpClient;

/// How often the driver moves the phase on and reports progress.
const TICK: Duration = Duration::from_millis(250);
/// How long stopped bots may take to say goodbye before they are aborted
/// (they need a second or two).
const STOP_GRACE: Duration = Duration::from_secs(10);

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
    let shared = Arc::new(RunShared::new(config));
    let sampler = tokio::spawn(sample_status(shared.clone()));
    let checker = tokio::spawn(view_check(shared.clone()));
    let mut fleet = Fleet::new(shared.clone());
    let mut timeline = Timeline::new(Instant::now());
    drive(&shared, &mut fleet, &mut timeline, &mut progress, shutdown).await;
    fleet.finish().await;
    sampler.abort();
    let _ = sampler.await;
    checker.abort();
    let _ = checker.await;
    let measured = timeline.measured(Instant::now());
    let elapsed = timeline.started.elapsed();
    progress(&progress_of(&shared, BotPhase::Stopping, elapsed, None));
    let run = timeline.run_time(Instant::now());
    Ok(report(&shared, measured, run))
}

/// The driver's loop: starts bots as login slots free up, reaps them, ends
/// the run on `shutdown`, and on each tick moves the phase on and reports
/// progress. Returns once the run is over and every bot is gone.
async fn drive(
    shared: &RunShared,
    fleet: &mut Fleet,
    timeline: &mut Timeline,
    progress: &mut impl FnMut(&Progress),
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut slots = SlotQueue::new(shared.slots.clone());
    loop {
        let slot = slots.next(fleet.waiting(timeline.phase));
        tokio::select! {
            permit = slot => {
                if let Some(permit) = permit {
                    fleet.start_next(permit);
                }
            }
            Some(_) = fleet.bots.join_next(), if !fleet.bots.is_empty() => {}
            () = &mut shutdown, if timeline.phase != BotPhase::Stopping => {
                timeline.shut_down(shared, Instant::now());
            }
            _ = ticker.tick() => on_tick(shared, fleet, timeline, progress),
        }
        if !fleet.bots.is_empty() {
            continue;
        }
        if timeline.phase == BotPhase::Stopping {
            break;
        }
        // Every bot is gone before the period even started (all failed or
        // dropped): nothing left to measure.
        if fleet.all_started() {
            timeline.nothing_left(shared, Instant::now());
            break;
        }
    }
}

/// The driver's place in the queue for login slots, which it shares with
/// the churn bots' re-logins: the slots' semaphore is first come, first
/// served, and the place is kept across turns of the driver's loop, so
/// bots not yet started are never overtaken for ever by bots that keep
/// logging in again. (Asking afresh on each turn, four times a second at
/// least, would put the driver at the back of the queue each time.)
struct SlotQueue {
    slots: Arc<Semaphore>,
    /// The pending request for a slot, while a bot waits to start.
    place: Option<PollSemaphore>,
}

impl SlotQueue {
    fn new(slots: Arc<Semaphore>) -> Self {
        Self { slots, place: None }
    }

    /// A login slot for the next bot, once one is free; dropping the future
    /// keeps the place. Never while no bot is `waiting` to start (then the
    /// place is given up, and with it any slot it was granted).
    fn next(&mut self, waiting: bool) -> impl Future<Output = Option<OwnedSemaphorePermit>> + '_ {
        if waiting {
            let slots = &self.slots;
            self.place
                .get_or_insert_with(|| PollSemaphore::new(Arc::clone(slots)));
        } else {
            self.place = None;
        }
        let place = self.place.as_mut();
        async move {
            match place {
                Some(place) => std::future::poll_fn(|cx| place.poll_acquire(cx)).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// A tick of the driver: moves the phase on, reports progress, and aborts
/// bots that outstay the stop.
fn on_tick(
    shared: &RunShared,
    fleet: &mut Fleet,
    timeline: &mut Timeline,
    progress: &mut impl FnMut(&Progress),
) {
    let now = Instant::now();
    timeline.advance(shared, now);
    let remaining = timeline.remaining(shared.config.duration, now);
    progress(&progress_of(
        shared,
        timeline.phase,
        timeline.started.elapsed(),
        remaining,
    ));
    if timeline.stop_overdue(now) {
        fleet.bots.abort_all();
    }
}

/// The bots of a run: the tasks started so far.
struct Fleet {
    shared: Arc<RunShared>,
    bots: JoinSet<()>,
    /// How many bots were started (the next one's offset from
    /// `first_index`).
    next: usize,
}

impl Fleet {
    fn new(shared: Arc<RunShared>) -> Self {
        Self {
            shared,
            bots: JoinSet::new(),
            next: 0,
        }
    }

    /// Whether a bot waits to start: only while the run is connecting.
    fn waiting(&self, phase: BotPhase) -> bool {
        phase == BotPhase::Connecting && !self.all_started()
    }

    fn all_started(&self) -> bool {
        self.next >= self.shared.config.count
    }

    /// Starts the next bot, holding the login slot it got.
    fn start_next(&mut self, permit: OwnedSemaphorePermit) {
        let index = self.shared.config.first_index + self.next;
        self.next += 1;
        add(&self.shared.n.started, 1);
        self.bots
            .spawn(bot(self.shared.clone(), index, Some(permit)));
    }

    /// Waits for every bot to end, and counts the bots an early stop left
    /// unstarted as failed.
    async fn finish(&mut self) {
        while self.bots.join_next().await.is_some() {}
        let never_started = (self.shared.config.count - self.next) as u64;
        if never_started > 0 {
            add(&self.shared.n.failed, never_started);
            lock(&self.shared.failures).add_n("stopped before starting", never_started);
        }
    }
}

/// Where a run is in time: its phase and the instants that bound it.
struct Timeline {
    phase: BotPhase,
    started: Instant,
    /// The end of the warm-up, once it began.
    warm_until: Option<Instant>,
    /// The measured period: its start, and its end (planned, until the run
    /// stops).
    measure_start: Option<Instant>,
    stop_at: Option<Instant>,
    /// When the bots were told to stop.
    stopping_since: Option<Instant>,
}

impl Timeline {
    fn new(started: Instant) -> Self {
        Self {
            phase: BotPhase::Connecting,
            started,
            warm_until: None,
            measure_start: None,
            stop_at: None,
            stopping_since: None,
        }
    }

    /// Moves the phase on at `now`: to the warm-up once every bot has
    /// entered or failed, to the measured period when the warm-up is over,
    /// and to stopping when that is over. Round trips follow to the
    /// histogram of each window.
    fn advance(&mut self, shared: &RunShared, now: Instant) {
        let settled = get(&shared.n.settled) >= shared.config.count as u64;
        if self.phase == BotPhase::Connecting && settled {
            shared.everyone_in.cancel();
            self.phase = BotPhase::WarmingUp;
            shared.window.set(RttWindow::Warmup);
            self.warm_until = Some(now + shared.config.warmup);
        }
        match self.phase {
            BotPhase::WarmingUp if self.warm_until.is_some_and(|t| now >= t) => {
                self.phase = BotPhase::Running;
                shared.window.set(RttWindow::Measured);
                self.measure_start = Some(now);
                self.stop_at = Some(now + shared.config.duration);
            }
            BotPhase::Running if self.stop_at.is_some_and(|t| now >= t) => {
                shared.window.set(RttWindow::After);
                if shared.config.admin.is_some() {
                    self.phase = BotPhase::Checking;
                    shared.settling.store(true, Ordering::Relaxed);
                } else {
                    self.stop_bots(shared, now);
                }
            }
            BotPhase::Checking if shared.check_done.load(Ordering::Relaxed) => {
                self.stop_bots(shared, now);
            }
            _ => {}
        }
    }

    /// Tells the bots to stop.
    fn stop_bots(&mut self, shared: &RunShared, now: Instant) {
        shared.stop.cancel();
        self.phase = BotPhase::Stopping;
        self.stopping_since = Some(now);
    }

    /// The run is shut down at `now`: the bots stop and the measured period
    /// ends (empty if it had not begun).
    fn shut_down(&mut self, shared: &RunShared, now: Instant) {
        self.stop_bots(shared, now);
        self.end_measuring(now);
    }

    /// Every bot is gone before the run's end: nothing left to measure.
    fn nothing_left(&mut self, shared: &RunShared, now: Instant) {
        shared.stop.cancel();
        self.end_measuring(now);
    }

    fn end_measuring(&mut self, now: Instant) {
        self.measure_start.get_or_insert(now);
        self.stop_at = Some(now);
    }

    /// Time left in the warm-up and the measured period.
    fn remaining(&self, duration: Duration, now: Instant) -> Option<Duration> {
        match self.phase {
            BotPhase::WarmingUp => self
                .warm_until
                .map(|t| t.saturating_duration_since(now) + duration),
            BotPhase::Running => self.stop_at.map(|t| t.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// Whether the bots have had [`STOP_GRACE`] to say goodbye.
    fn stop_overdue(&self, now: Instant) -> bool {
        self.stopping_since
            .is_some_and(|t| now.duration_since(t) > STOP_GRACE)
    }

    /// From the start until the bots were told to stop (or `now`).
    fn run_time(&self, now: Instant) -> Duration {
        self.stopping_since
            .unwrap_or(now)
            .min(now)
            .saturating_duration_since(self.started)
    }

    /// The measured period's length, as of `now`.
    fn measured(&self, now: Instant) -> Duration {
        match (self.measure_start, self.stop_at) {
            (Some(a), Some(b)) => b.min(now).saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }
}

/// A progress snapshot of the run.
fn progress_of(
    shared: &RunShared,
    phase: BotPhase,
    elapsed: Duration,
    remaining: Option<Duration>,
) -> Progress {
    let n = &shared.n;
    Progress {
        phase,
        elapsed,
        remaining,
        bots: shared.config.count,
        started: get(&n.started),
        in_world: get(&n.in_world),
        connected: get(&n.connected),
        failed: get(&n.failed),
        dropped: get(&n.dropped),
        churn_cycles: get(&n.churn_cycles),
        rtt_samples: get(&n.rtt_samples),
        rtt_recent: lock(&shared.rtt_recent).last_full(),
    }
}

/// The report of a run whose measured period lasted `measured`, and which
/// ran for `run` until the bots were stopped.
fn report(shared: &RunShared, measured: Duration, run: Duration) -> BotReport {
    let n = &shared.n;
    let client_seconds = get(&n.world_micros) as f64 / 1e6;
    let rate = |total: u64| {
        if client_seconds > 0.0 {
            (total as f64 / client_seconds * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let per_client = |up: u64, down: u64| UpDown {
        up: rate(up),
        down: rate(down),
    };
    let worst_tick = |samples: &AtomicU64, bits: &AtomicU64| {
        (get(samples) > 0).then(|| f64::from_bits(get(bits)))
    };
    BotReport {
        bots: shared.config.count as u64,
        connected: get(&n.connected),
        failed: get(&n.failed),
        dropped: get(&n.dropped),
        rtt_ms: Percentiles::of_us(&lock(&shared.rtt)),
        rtt_ms_ramp_up: Percentiles::of_us(&lock(&shared.rtt_ramp)),
        rtt_ms_warmup: Percentiles::of_us(&lock(&shared.rtt_warmup)),
        warmup_s: shared.config.warmup.as_secs_f64(),
        bytes_per_s_per_client: per_client(get(&n.bytes_up), get(&n.bytes_down)),
        payload_bytes_per_s_per_client: per_client(get(&n.payload_up), get(&n.payload_down)),
        datagrams_per_s_per_client: per_client(get(&n.datagrams_up), get(&n.datagrams_down)),
        server_tick_p99_ms: worst_tick(&n.tick_samples, &n.tick_p99_bits),
        server_tick_p99_ms_ramp_up: worst_tick(&n.tick_samples_ramp, &n.tick_p99_ramp_bits),
        behaviour: shared.config.behaviour,
        seed: shared.config.seed,
        duration_s: (measured.as_secs_f64() * 1000.0).round() / 1000.0,
        client_seconds: (client_seconds * 1000.0).round() / 1000.0,
        registered: get(&n.registered),
        logins: logins(shared, run),
        login_ms: Percentiles::of_us(&lock(&shared.login)),
        enter_ms: Percentiles::of_us(&lock(&shared.enter)),
        rtt_samples: get(&n.rtt_samples),
        rtt_unacked: get(&n.rtt_unacked),
        inputs_sent: get(&n.inputs_sent),
        state_packets: get(&n.state_packets),
        acks_sent: get(&n.acks_sent),
        state_stale: get(&n.state_stale),
        state_foreign: get(&n.state_foreign),
        loss: shared.config.loss,
        loss_dropped: get(&n.loss_dropped),
        view: shared
            .check_done
            .load(Ordering::Relaxed)
            .then(|| *lock(&shared.view)),
        decode_errors: get(&n.decode_errors),
        client_queue_drops: get(&n.client_queue_drops),
        server_errors: get(&n.server_errors),
        transfers: get(&n.transfers),
        chat_sent: get(&n.chat_sent),
        chat_received: get(&n.chat_received),
        game: super::report::GameCounts {
            actions: get(&n.game_actions),
            events: get(&n.game_events),
            hits: get(&n.game_hits),
            kills: get(&n.game_kills),
        },
        churn_cycles: get(&n.churn_cycles),
        churn_failed: get(&n.churn_failed),
        status_samples: get(&n.status_samples),
        status_errors: get(&n.status_errors),
        failures: lock(&shared.failures).counts().clone(),
        drops: lock(&shared.drops).counts().clone(),
    }
}

/// The run's logins by kind, and their rate over `run`.
fn logins(shared: &RunShared, run: Duration) -> Logins {
    let n = &shared.n;
    let mut logins = Logins {
        password: get(&n.logins_password),
        resume: get(&n.logins_resume),
        resume_refused: get(&n.resume_refused),
        per_s: 0.0,
    };
    let secs = run.as_secs_f64();
    if secs > 0.0 {
        logins.per_s = (logins.total() as f64 / secs * 10.0).round() / 10.0;
    }
    logins
}

/// Samples `/v1/status` until aborted; keeps the worst scene tick p99 of
/// the measured period, and apart from it the worst before (the ramp-up
/// and warm-up, where the server also hashes every bot's password), as
/// the round trip is kept.
async fn sample_status(shared: Arc<RunShared>) {
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
                let (bits, count) = match shared.window.get() {
                    RttWindow::RampUp | RttWindow::Warmup => {
                        (&shared.n.tick_p99_ramp_bits, &shared.n.tick_samples_ramp)
                    }
                    RttWindow::Measured => (&shared.n.tick_p99_bits, &shared.n.tick_samples),
                    RttWindow::After => continue,
                };
                add(count, 1);
                let _ = bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    (worst > f64::from_bits(old)).then(|| worst.to_bits())
                });
            }
            Err(_) => add(&shared.n.status_errors, 1),
        }
    }
}

/// How long the bots stand still, without loss, before the truth is taken.
const SETTLE: Duration = Duration::from_secs(2);
/// Between the two snapshots that tell moving entities from still ones.
const SNAPSHOT_GAP: Duration = Duration::from_millis(300);
/// How long the bots have to compare once the truth is out.
const COMPARE: Duration = Duration::from_secs(1);

/// The view check's driver side: once the bots settle, takes every placed
/// scene's snapshot twice, hands the truth to the bots and, after they had
/// their time, marks the check done (so the run stops). A scene whose
/// snapshot fails is left out; its bots count as unchecked.
async fn view_check(shared: Arc<RunShared>) {
    let Some(admin) = shared.config.admin.clone() else {
        return;
    };
    while !shared.settling.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let scenes = match shared
        .http
        .get_json::<serde_json::Value>("/v1/status")
        .await
    {
        Ok(status) => scene_names(&status),
        Err(_) => Vec::new(),
    };
    // The admin API may have a listener of its own.
    let http =
        HttpClient::new(&admin.url, shared.config.request_timeout, 1).with_max_body(64 << 20);
    let fetch = |scene: String| {
        let http = http.clone();
        let token = admin.token.clone();
        async move {
            http.get_as::<tessera_sim::SceneSnapshot>(
                &format!("/v1/scenes/{scene}/snapshot"),
                Some(&token),
            )
            .await
            .ok()
        }
    };
    let mut first = Vec::new();
    for scene in &scenes {
        first.push(fetch(scene.clone()).await);
    }
    tokio::time::sleep(SNAPSHOT_GAP).await;
    let mut truth = super::view_check::Truth::new();
    for (scene, first) in scenes.iter().zip(first) {
        if let (Some(a), Some(b)) = (first, fetch(scene.clone()).await) {
            truth.insert(
                (b.scene_tag, b.epoch),
                super::view_check::SceneTruth::new(&a, b),
            );
        }
    }
    let truth = Arc::new(truth);
    shared.truth.send_replace(Some(Arc::clone(&truth)));
    tokio::time::sleep(COMPARE).await;
    // A third snapshot: a stale entity that changed after the truth was
    // taken (a respawn, a blow) may be held newer than the truth, not older.
    let mut later = std::collections::BTreeMap::new();
    for scene in &scenes {
        if let Some(s) = fetch(scene.clone()).await {
            later.insert((s.scene_tag, s.epoch), s);
        }
    }
    let seen = std::mem::take(&mut *lock(&shared.stale_seen));
    let changed = seen
        .iter()
        .filter(|(p, id)| match (truth.get(p), later.get(p)) {
            (Some(t), Some(l)) => super::view_check::changed_since(&t.snap, l, *id),
            _ => false,
        })
        .count() as u64;
    {
        let mut v = lock(&shared.view);
        v.stale -= changed.min(v.stale);
        v.changed_after_truth += changed;
    }
    shared.check_done.store(true, Ordering::Relaxed);
}

/// The `scenes[].name`s of a `/v1/status` answer, read loosely.
fn scene_names(status: &serde_json::Value) -> Vec<String> {
    status["scenes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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
    HttpClient::new(&config.login, config.request_timeout, 1)
        .get_json::<serde_json::Value>("/v1/status")
        .await
        .map(|_| ())
        .map_err(|e| format!("{}/v1/status: {e}", config.login))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicU64;

    use axum::Router;
    use tessera_proto::login::ApiError;

    use super::*;
    use crate::bot::Behaviour;

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

    fn two_bots(warmup_s: u64) -> RunShared {
        let mut config =
            BotConfig::new(2, "http://127.0.0.1:1", 60, Behaviour::Wander).expect("valid");
        config.warmup = Duration::from_secs(warmup_s);
        RunShared::new(config)
    }

    #[tokio::test]
    async fn the_timeline_runs_through_each_phase() {
        let shared = two_bots(5);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut timeline = Timeline::new(t0);
        add(&shared.n.settled, 1);
        timeline.advance(&shared, t0);
        assert_eq!(timeline.phase, BotPhase::Connecting, "one bot still out");
        assert!(!shared.everyone_in.is_cancelled(), "no churn yet");
        add(&shared.n.settled, 1);
        timeline.advance(&shared, t0 + s(1));
        assert_eq!(timeline.phase, BotPhase::WarmingUp);
        assert!(shared.everyone_in.is_cancelled(), "churn may start");
        assert_eq!(shared.window.get(), RttWindow::Warmup);
        assert_eq!(timeline.remaining(s(60), t0 + s(2)), Some(s(64)));
        timeline.advance(&shared, t0 + s(6));
        assert_eq!(timeline.phase, BotPhase::Running);
        assert_eq!(shared.window.get(), RttWindow::Measured);
        assert_eq!(timeline.remaining(s(60), t0 + s(16)), Some(s(50)));
        assert!(!shared.stop.is_cancelled());
        timeline.advance(&shared, t0 + s(66));
        assert_eq!(timeline.phase, BotPhase::Stopping);
        assert_eq!(shared.window.get(), RttWindow::After);
        assert!(shared.stop.is_cancelled());
        assert_eq!(timeline.measured(t0 + s(70)), s(60));
        assert_eq!(timeline.run_time(t0 + s(70)), s(66));
        assert!(!timeline.stop_overdue(t0 + s(70)));
        assert!(timeline.stop_overdue(t0 + s(77)));
    }

    #[tokio::test]
    async fn no_warmup_measures_from_the_last_entry_and_shutdown_cuts_it_short() {
        let shared = two_bots(0);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut timeline = Timeline::new(t0);
        add(&shared.n.settled, 2);
        timeline.advance(&shared, t0 + s(1));
        assert_eq!(timeline.phase, BotPhase::Running, "in one tick");
        timeline.shut_down(&shared, t0 + s(11));
        assert_eq!(timeline.phase, BotPhase::Stopping);
        assert!(shared.stop.is_cancelled());
        assert_eq!(timeline.measured(t0 + s(20)), s(10));
        // A shutdown before the measured period measures nothing.
        let mut early = Timeline::new(t0);
        early.shut_down(&two_bots(0), t0 + s(3));
        assert_eq!(early.measured(t0 + s(4)), Duration::ZERO);
    }

    fn api_error(
        status: axum::http::StatusCode,
        code: &str,
        retry: Option<u64>,
    ) -> (axum::http::StatusCode, axum::Json<ApiError>) {
        let error = ApiError {
            code: code.into(),
            error: "test".into(),
            retry_after_ms: retry,
        };
        (status, axum::Json(error))
    }

    /// A login API that admits nobody: every login is `401`, the first
    /// registration `429` (to be retried), the others `400`; `registers`
    /// counts the registrations.
    fn refusing_login_api(registers: Arc<AtomicU64>) -> Router {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        let login = || async { api_error(StatusCode::UNAUTHORIZED, "bad_credentials", None) };
        let register = move || async move {
            if registers.fetch_add(1, Ordering::Relaxed) == 0 {
                api_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(10))
            } else {
                api_error(StatusCode::BAD_REQUEST, "invalid", None)
            }
        };
        let status = || async {
            axum::Json(serde_json::json!({"scenes": [{"name": "field", "tick_p99_ms": 1.5}]}))
        };
        Router::new()
            .route("/v1/login", post(login))
            .route("/v1/register", post(register))
            .route("/v1/status", get(status))
    }

    async fn serve(app: Router) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        (
            addr,
            tokio::spawn(async move { axum::serve(listener, app).await }),
        )
    }

    /// The run loop against a fake login API that admits nobody: every bot
    /// fails with the server's reason (after backing off a 429), the status
    /// is sampled, and the run ends promptly without a measured period.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bots_that_cannot_log_in_fail_with_the_reason() {
        let registers = Arc::new(AtomicU64::new(0));
        let (addr, server) = serve(refusing_login_api(registers.clone())).await;
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

    /// Three churners keep re-queueing for the only login slot, each
    /// holding it 5 ms, while the driver's loop turns every millisecond:
    /// the driver still gets its slots, first come, first served.
    #[tokio::test]
    async fn the_driver_is_not_overtaken_by_bots_logging_in_again() {
        let slots = Arc::new(Semaphore::new(1));
        let mut churners = JoinSet::new();
        for _ in 0..3 {
            let slots = slots.clone();
            churners.spawn(async move {
                while let Ok(permit) = slots.clone().acquire_owned().await {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    drop(permit);
                }
            });
        }
        tokio::task::yield_now().await;
        let mut queue = SlotQueue::new(slots.clone());
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        let mut started = 0;
        let driver = async {
            while started < 5 {
                tokio::select! {
                    permit = queue.next(true) => {
                        assert!(permit.is_some());
                        started += 1;
                    }
                    _ = ticker.tick() => {}
                }
            }
        };
        // Only a bound against a hang: the churners would get through
        // about 2,000 slots meanwhile.
        let got = tokio::time::timeout(Duration::from_secs(10), driver).await;
        assert!(got.is_ok(), "the driver got {started} of 5 slots");
        // Given up while no bot waits: the queue holds no slot back.
        drop(queue.next(false));
        assert!(queue.place.is_none());
        slots.close();
        churners.shutdown().await;
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
