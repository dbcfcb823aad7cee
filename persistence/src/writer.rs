//! The write-behind writer: one thread owns all PC-state writes.
//!
//! Scenes hand it [`SaveBatch`]es through a bounded channel and never wait on the disk.
//! Each round, the writer takes everything that has arrived, merges it into one pending
//! set — per scene, the newest state of each avatar (highest placement epoch, then highest
//! tick, since ticks restart with every placement; on a tie, the later arrival) — and
//! commits that set in one durable transaction. When batches arrive faster
//! than commits finish, they are therefore coalesced rather than queued: a full channel
//! sends the batch into an overflow buffer that is merged the same way, so memory is bounded
//! by one state per avatar however far behind the disk falls. Every commit is reported
//! (time, size) and every state merged away, refused or dropped is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::Store;
use crate::types::{AvatarId, ObjectState, PcState, SaveBatch, SceneId};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Batches the channel holds before new ones go to the overflow buffer. Default 8.
    pub capacity: usize,
    /// How long to wait before retrying a failed commit. Default 200 ms.
    pub retry_delay: Duration,
    /// Commit attempts at shutdown before pending states are given up (and counted as
    /// dropped). Default 3.
    pub shutdown_attempts: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            capacity: 8,
            retry_delay: Duration::from_millis(200),
            shutdown_attempts: 3,
        }
    }
}

/// What one commit wrote and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitReport {
    /// 1 for the writer's first commit, and so on.
    pub commit: u64,
    /// Batches merged into this commit.
    pub batches: u64,
    /// States written.
    pub states: usize,
    /// States the store refused (avatar not in the scene, not finite).
    pub refused: usize,
    /// For each scene in the commit, the newest tick written: that scene is durable up to it.
    pub scenes: Vec<(SceneId, u64)>,
    /// Every batch whose [`Submission::ticket`] is at most this is now durable (or was
    /// refused by the store, counted in `refused`): batches commit in submission order.
    pub through: u64,
    /// Wall time of the transaction, from begin to durable commit.
    pub commit_time: Duration,
}

/// Running totals. `submitted == committed_batches + batches merged into a pending set not
/// yet committed`; states: every submitted state is written, superseded, stale, refused or
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    pub submitted: u64,
    /// States in the submitted batches.
    pub states_submitted: u64,
    /// Batches that found the channel full and were merged into the overflow buffer.
    pub overflowed: u64,
    pub committed_batches: u64,
    pub commits: u64,
    pub commit_errors: u64,
    pub states_written: u64,
    /// States replaced by a newer state of the same avatar before they were committed.
    pub states_superseded: u64,
    /// States that arrived older than one already pending for the same avatar.
    pub states_stale: u64,
    pub states_refused: u64,
    /// States given up at shutdown because the store kept failing.
    pub states_dropped: u64,
}

impl WriterStats {
    /// States submitted and not yet written, superseded, stale, refused or
    /// dropped: waiting for a commit. (Read from relaxed counters: a
    /// moment's skew is clamped at 0.)
    pub fn states_pending(&self) -> u64 {
        self.states_submitted.saturating_sub(
            self.states_written
                + self.states_superseded
                + self.states_stale
                + self.states_refused
                + self.states_dropped,
        )
    }
}

/// Whether [`Writer::submit`] queued the batch or merged it into the overflow buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    Coalesced,
}

/// What [`Writer::submit_at`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submission {
    /// The batch's number: 1 for the writer's first, and so on. It is durable once a
    /// [`CommitReport::through`] reaches it.
    pub ticket: u64,
    pub submitted: Submitted,
}

/// The writer has stopped (its thread panicked) or its last commit failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    #[error("the writer thread has stopped")]
    Stopped,
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A placement epoch, as the cluster numbers a scene's placements: a newer placement's
/// states win over an older one's, whatever their ticks.
type Epoch = u64;

enum Msg {
    /// A batch, its epoch and its ticket.
    Batch(Epoch, SaveBatch, u64),
    /// Something was put in the overflow buffer.
    Wake,
    Flush(SyncSender<Result<(), FlushError>>),
}

/// Per scene, the newest state of each avatar and of each object, with the epoch it was
/// saved under.
#[derive(Debug, Default)]
struct Pending {
    scenes: BTreeMap<SceneId, BTreeMap<AvatarId, (Epoch, PcState)>>,
    objects: BTreeMap<SceneId, BTreeMap<u64, (Epoch, ObjectState)>>,
    batches: u64,
    /// The highest ticket merged in.
    through: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.batches == 0
    }

    fn merge(&mut self, epoch: Epoch, batch: SaveBatch, ticket: u64, counters: &Counters) {
        self.batches += 1;
        self.through = self.through.max(ticket);
        self.merge_states(
            batch.scene,
            batch.states.into_iter().map(|s| (epoch, s)),
            counters,
        );
        self.merge_objects(batch.scene, batch.objects.into_iter().map(|o| (epoch, o)));
    }

    /// Like states: the newest (epoch, tick) of each object wins.
    fn merge_objects(
        &mut self,
        scene: SceneId,
        objects: impl IntoIterator<Item = (Epoch, ObjectState)>,
    ) {
        let mut objects = objects.into_iter().peekable();
        if objects.peek().is_none() {
            return;
        }
        let scene = self.objects.entry(scene).or_default();
        for (epoch, o) in objects {
            match scene.get_mut(&o.key) {
                None => {
                    scene.insert(o.key, (epoch, o));
                }
                Some(old) if (epoch, o.tick) >= (old.0, old.1.tick) => *old = (epoch, o),
                Some(_) => {}
            }
        }
    }

    fn merge_states(
        &mut self,
        scene: SceneId,
        states: impl IntoIterator<Item = (Epoch, PcState)>,
        counters: &Counters,
    ) {
        let scene = self.scenes.entry(scene).or_default();
        for (epoch, state) in states {
            match scene.get_mut(&state.avatar) {
                None => {
                    scene.insert(state.avatar, (epoch, state));
                }
                Some(old) if (epoch, state.tick) >= (old.0, old.1.tick) => {
                    *old = (epoch, state);
                    counters.states_superseded.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {
                    counters.states_stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Merges another pending set (the overflow buffer) into this one.
    fn absorb(&mut self, other: Pending, counters: &Counters) {
        self.batches += other.batches;
        self.through = self.through.max(other.through);
        for (scene, states) in other.scenes {
            self.merge_states(scene, states.into_values(), counters);
        }
        for (scene, objects) in other.objects {
            self.merge_objects(scene, objects.into_values());
        }
    }

    fn states(&self) -> usize {
        self.scenes.values().map(BTreeMap::len).sum()
    }
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    states_submitted: AtomicU64,
    overflowed: AtomicU64,
    committed_batches: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    states_written: AtomicU64,
    states_superseded: AtomicU64,
    states_stale: AtomicU64,
    states_refused: AtomicU64,
    states_dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            submitted: g(&self.submitted),
            states_submitted: g(&self.states_submitted),
            overflowed: g(&self.overflowed),
            committed_batches: g(&self.committed_batches),
            commits: g(&self.commits),
            commit_errors: g(&self.commit_errors),
            states_written: g(&self.states_written),
            states_superseded: g(&self.states_superseded),
            states_stale: g(&self.states_stale),
            states_refused: g(&self.states_refused),
            states_dropped: g(&self.states_dropped),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// The overflow buffer, and the last ticket handed out (numbered under this
    /// lock, so tickets follow the order batches reach the writer).
    overflow: Mutex<(Pending, u64)>,
    counters: Counters,
}

/// Handle to the writer thread. Dropping it (or [`Writer::shutdown`]) commits what is
/// pending and joins the thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread over `store`. `on_commit` runs on the writer thread after
    /// each durable commit.
    pub fn spawn(
        store: Arc<Store>,
        config: WriterConfig,
        on_commit: impl FnMut(&CommitReport) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.capacity.max(1));
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tessera-writer".into())
            .spawn(move || run(&store, &config, &rx, &thread_shared, on_commit))?;
        Ok(Self {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    /// Hands a batch to the writer without waiting for the disk. If the channel is full
    /// the batch is merged into the overflow buffer (latest state per avatar wins). The
    /// same as [`Writer::submit_at`] epoch 0: for writers that do not place scenes.
    pub fn submit(&self, batch: SaveBatch) -> Submitted {
        self.submit_at(0, batch).submitted
    }

    /// [`Writer::submit`] for a batch a scene saved under placement `epoch`: a state of
    /// a later epoch replaces one of an earlier epoch even at a lower tick (ticks start
    /// again with each placement), and never the other way round.
    pub fn submit_at(&self, epoch: u64, batch: SaveBatch) -> Submission {
        let c = &self.shared.counters;
        c.submitted.fetch_add(1, Ordering::Relaxed);
        c.states_submitted
            .fetch_add(batch.states.len() as u64, Ordering::Relaxed);
        // Order: while older batches wait in the overflow buffer, a newer one
        // must join them there rather than overtake them through the channel.
        // Deciding under the overflow lock keeps everything in the channel
        // older than everything in the overflow buffer, and the writer drains
        // the channel before it absorbs the buffer, so commits stay in
        // submission order (and commit reports never go back in time).
        let mut guard = self
            .shared
            .overflow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (overflow, last) = &mut *guard;
        *last += 1;
        let ticket = *last;
        let queued = Submission {
            ticket,
            submitted: Submitted::Queued,
        };
        let batch = match &self.tx {
            Some(tx) if overflow.is_empty() => {
                match tx.try_send(Msg::Batch(epoch, batch, ticket)) {
                    Ok(()) => return queued,
                    Err(
                        TrySendError::Full(Msg::Batch(_, b, _))
                        | TrySendError::Disconnected(Msg::Batch(_, b, _)),
                    ) => b,
                    Err(_) => return queued,
                }
            }
            _ => batch,
        };
        c.overflowed.fetch_add(1, Ordering::Relaxed);
        overflow.merge(epoch, batch, ticket, c);
        drop(guard);
        // If the writer emptied the channel since, make sure it looks again; if the
        // channel is full it will anyway.
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Wake);
        }
        Submission {
            ticket,
            submitted: Submitted::Coalesced,
        }
    }

    /// Waits until everything submitted before this call is committed.
    pub fn flush(&self) -> Result<(), FlushError> {
        let tx = self.tx.as_ref().ok_or(FlushError::Stopped)?;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack_tx))
            .map_err(|_| FlushError::Stopped)?;
        ack_rx.recv().map_err(|_| FlushError::Stopped)?
    }

    pub fn stats(&self) -> WriterStats {
        self.shared.counters.snapshot()
    }

    /// Commits what is pending, stops the thread, returns the final totals.
    pub fn shutdown(mut self) -> WriterStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    store: &Store,
    config: &WriterConfig,
    rx: &mpsc::Receiver<Msg>,
    shared: &Shared,
    mut on_commit: impl FnMut(&CommitReport),
) {
    let counters = &shared.counters;
    let mut pending = Pending::default();
    let mut flushes: Vec<SyncSender<Result<(), FlushError>>> = Vec::new();
    let mut closing = false;
    let mut shutdown_failures = 0u32;
    let mut commit_no = 0u64;
    loop {
        let mut handle = |msg: Msg, pending: &mut Pending| match msg {
            Msg::Batch(epoch, b, ticket) => pending.merge(epoch, b, ticket, counters),
            Msg::Wake => {}
            Msg::Flush(ack) => flushes.push(ack),
        };
        let first = if pending.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            // A failed commit is pending: retry after a pause, still taking new batches.
            rx.recv_timeout(config.retry_delay)
        };
        match first {
            Ok(msg) => handle(msg, &mut pending),
            Err(RecvTimeoutError::Disconnected) => closing = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Under the overflow lock no submitter can add anything, and
        // submitters keep everything in the channel older than everything in
        // the buffer: drain the channel first, then take the buffer, so
        // batches are applied in submission order.
        let mut guard = shared
            .overflow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Ok(msg) = rx.try_recv() {
            handle(msg, &mut pending);
        }
        let overflow = std::mem::take(&mut guard.0);
        drop(guard);
        pending.absorb(overflow, counters);

        let mut result = Ok(());
        if !pending.is_empty() {
            let mut batches: BTreeMap<SceneId, SaveBatch> = pending
                .scenes
                .iter()
                .map(|(&scene, states)| {
                    let batch = SaveBatch {
                        scene,
                        states: states.values().map(|(_, s)| s.clone()).collect(),
                        objects: Vec::new(),
                    };
                    (scene, batch)
                })
                .collect();
            for (&scene, objects) in &pending.objects {
                batches
                    .entry(scene)
                    .or_insert_with(|| SaveBatch {
                        scene,
                        ..SaveBatch::default()
                    })
                    .objects = objects.values().map(|(_, o)| o.clone()).collect();
            }
            let batches: Vec<SaveBatch> = batches.into_values().collect();
            let started = Instant::now();
            match store.save_batches(&batches) {
                Ok(saved) => {
                    commit_no += 1;
                    let report = CommitReport {
                        commit: commit_no,
                        batches: pending.batches,
                        states: saved.written,
                        refused: saved.refused,
                        scenes: batches
                            .iter()
                            .map(|b| {
                                let states = b.states.iter().map(|s| s.tick);
                                let objects = b.objects.iter().map(|o| o.tick);
                                (b.scene, states.chain(objects).max().unwrap_or(0))
                            })
                            .collect(),
                        commit_time: started.elapsed(),
                        through: pending.through,
                    };
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    counters
                        .committed_batches
                        .fetch_add(pending.batches, Ordering::Relaxed);
                    counters
                        .states_written
                        .fetch_add(saved.written as u64, Ordering::Relaxed);
                    counters
                        .states_refused
                        .fetch_add(saved.refused as u64, Ordering::Relaxed);
                    tracing::debug!(
                        commit = report.commit,
                        batches = report.batches,
                        states = report.states,
                        ms = report.commit_time.as_secs_f64() * 1e3,
                        "write-behind commit"
                    );
                    pending = Pending::default();
                    on_commit(&report);
                }
                Err(e) => {
                    counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %crate::error::error_chain(&e), states = pending.states(), "write-behind commit failed; will retry");
                    result = Err(FlushError::Commit(crate::error::error_chain(&e)));
                    if closing {
                        shutdown_failures += 1;
                    }
                }
            }
        }
        for ack in flushes.drain(..) {
            let _ = ack.send(result.clone());
        }
        if closing {
            if pending.is_empty() {
                return;
            }
            if shutdown_failures >= config.shutdown_attempts {
                counters
                    .states_dropped
                    .fetch_add(pending.states() as u64, Ordering::Relaxed);
                tracing::error!(
                    states = pending.states(),
                    "writer shutting down with uncommitted states"
                );
                return;
            }
            std::thread::sleep(config.retry_delay);
        }
    }
}

/// The PC state that batch `k` of the crash-torture writer (`tessera db writer`)
/// gives an avatar: every field derives from `k`, so a state read back after a
/// kill can be recognised as coming whole from one batch.
pub fn torture_state(scene: SceneId, avatar: AvatarId, k: u64) -> PcState {
    PcState {
        avatar,
        scene,
        position: [(k % 100_000) as f32, (avatar % 1000) as f32],
        heading: (k % 360) as f32,
        action: (k % 251) as u8,
        mount: (k % 7) as u8,
        online: k.is_multiple_of(2),
        tick: k,
        game: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(avatar: u64, tick: u64) -> PcState {
        PcState {
            game: Vec::new(),
            avatar,
            scene: 1,
            position: [tick as f32, 0.0],
            heading: 0.0,
            action: 0,
            mount: 0,
            online: true,
            tick,
        }
    }

    /// Objects merge like states: the newest (epoch, tick) of each key wins,
    /// an erasure included.
    #[test]
    fn merge_keeps_newest_object_per_key() {
        let c = Counters::default();
        let mut p = Pending::default();
        let obj = |key: u64, tick: u64, hp: u8| ObjectState {
            key,
            tick,
            game: if hp == 0 {
                Vec::new()
            } else {
                vec![crate::types::GameField {
                    name: "hp".into(),
                    version: 1,
                    bytes: vec![hp],
                }]
            },
        };
        for (epoch, objects) in [
            (1, vec![obj(1, 5, 10), obj(2, 5, 20)]),
            (1, vec![obj(1, 4, 11)]),
            (1, vec![obj(2, 6, 0)]),
            (2, vec![obj(1, 1, 12)]),
        ] {
            let batch = SaveBatch {
                scene: 3,
                objects,
                ..SaveBatch::default()
            };
            p.merge(epoch, batch, 1, &c);
        }
        let got: Vec<ObjectState> = p.objects[&3].values().map(|(_, o)| o.clone()).collect();
        assert_eq!(got, vec![obj(1, 1, 12), obj(2, 6, 0)]);
    }

    #[test]
    fn merge_keeps_newest_state_per_avatar() {
        let c = Counters::default();
        let mut p = Pending::default();
        p.merge(
            0,
            SaveBatch {
                objects: Vec::new(),
                scene: 1,
                states: vec![state(1, 5), state(2, 5)],
            },
            1,
            &c,
        );
        p.merge(
            0,
            SaveBatch {
                objects: Vec::new(),
                scene: 1,
                states: vec![state(1, 6)],
            },
            1,
            &c,
        );
        p.merge(
            0,
            SaveBatch {
                objects: Vec::new(),
                scene: 1,
                states: vec![state(2, 4)],
            },
            1,
            &c,
        );
        let mut o = Pending::default();
        o.merge(
            0,
            SaveBatch {
                objects: Vec::new(),
                scene: 1,
                states: vec![state(2, 9), state(3, 1)],
            },
            1,
            &c,
        );
        o.merge(
            0,
            SaveBatch {
                objects: Vec::new(),
                scene: 2,
                states: vec![state(1, 1)],
            },
            1,
            &c,
        );
        p.absorb(o, &c);
        assert_eq!(p.batches, 5);
        let s1 = &p.scenes[&1];
        assert_eq!((s1[&1].1.tick, s1[&2].1.tick, s1[&3].1.tick), (6, 9, 1));
        assert_eq!(p.scenes[&2][&1].1.tick, 1);
        let s = c.snapshot();
        assert_eq!((s.states_superseded, s.states_stale), (2, 1));
    }

    /// Ticks start again with every placement: a new placement's state at
    /// tick 5 is newer than the old placement's final flush at tick 900,
    /// whichever arrives first.
    #[test]
    fn merge_orders_by_epoch_then_tick() {
        let c = Counters::default();
        let one = |tick| SaveBatch {
            objects: Vec::new(),
            scene: 1,
            states: vec![state(1, tick)],
        };
        let mut p = Pending::default();
        p.merge(1, one(900), 1, &c);
        p.merge(2, one(5), 2, &c);
        assert_eq!(p.scenes[&1][&1], (2, state(1, 5)));
        let mut q = Pending::default();
        q.merge(2, one(5), 1, &c);
        q.merge(1, one(900), 2, &c);
        assert_eq!(q.scenes[&1][&1], (2, state(1, 5)));
        let s = c.snapshot();
        assert_eq!((s.states_superseded, s.states_stale), (1, 1));
        // Within one placement the higher tick wins.
        q.merge(2, one(6), 3, &c);
        assert_eq!(q.scenes[&1][&1], (2, state(1, 6)));
    }
}

#[cfg(test)]
mod store_tests {
    use std::sync::mpsc;

    use super::*;
    use crate::NewAvatar;

    /// While the disk is stuck (a write transaction held open elsewhere), submitting never
    /// blocks and nothing queues without bound: 200 batches end up in at most 2 commits,
    /// and the newest state of every avatar is what lands.
    #[test]
    fn coalesces_when_commits_fall_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("w.redb")).unwrap());
        let account = store
            .register("w@example.com", "writer password", None)
            .unwrap();
        let scene = store.create_scene("w").unwrap();
        let avatars = store
            .provision_avatars(
                account,
                &(0..300)
                    .map(|i| NewAvatar {
                        name: format!("walker{i}"),
                        figure: String::new(),
                        scene,
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let batch = |k: u64| SaveBatch {
            objects: Vec::new(),
            scene,
            states: avatars
                .iter()
                .map(|&avatar| PcState {
                    game: Vec::new(),
                    avatar,
                    scene,
                    position: [k as f32, 0.0],
                    heading: 0.0,
                    action: 0,
                    mount: 0,
                    online: true,
                    tick: k,
                })
                .collect(),
        };

        let (commits_tx, commits_rx) = mpsc::channel();
        let hold = store.db.begin_write().unwrap();
        let writer = Writer::spawn(
            Arc::clone(&store),
            WriterConfig {
                capacity: 2,
                ..WriterConfig::default()
            },
            move |r| commits_tx.send(r.clone()).unwrap(),
        )
        .unwrap();
        let writer = Arc::new(writer);
        let (done_tx, done_rx) = mpsc::channel();
        let submitter = {
            let writer = Arc::clone(&writer);
            let batches: Vec<_> = (1..=200).map(batch).collect();
            std::thread::spawn(move || {
                for b in batches {
                    writer.submit(b);
                }
                done_tx.send(()).unwrap();
            })
        };
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("submit blocked while the disk was stuck");
        submitter.join().unwrap();
        let stuck = writer.stats();
        assert!(stuck.overflowed > 0);
        // Nothing is committed while the disk is held: every state waits.
        assert_eq!(stuck.states_submitted, 200 * 300);
        assert_eq!(
            stuck.states_pending() + stuck.states_superseded + stuck.states_stale,
            200 * 300
        );
        drop(hold);
        writer.flush().unwrap();

        let reports: Vec<CommitReport> = commits_rx.try_iter().collect();
        assert!(reports.len() <= 2, "{} commits", reports.len());
        // Commits apply batches in submission order: reports never go back in time.
        assert!(
            reports.windows(2).all(|w| w[0].scenes <= w[1].scenes),
            "{:?}",
            reports.iter().map(|r| &r.scenes).collect::<Vec<_>>()
        );
        assert_eq!(reports.iter().map(|r| r.batches).sum::<u64>(), 200);
        assert_eq!(reports.last().unwrap().scenes, vec![(scene, 200)]);
        // Every ticket handed out is covered by the last commit.
        assert_eq!(reports.last().unwrap().through, 200);
        let states = store.load_scene(scene).unwrap();
        assert_eq!(states.len(), 300);
        assert!(
            states
                .iter()
                .all(|s| s.tick == 200 && s.position[0] == 200.0)
        );

        let writer = Arc::try_unwrap(writer).unwrap();
        let s = writer.shutdown();
        assert_eq!(s.submitted, 200);
        assert_eq!(s.committed_batches, 200);
        // Every submitted state is accounted for exactly once.
        assert_eq!(
            s.states_written
                + s.states_superseded
                + s.states_stale
                + s.states_refused
                + s.states_dropped,
            200 * 300
        );
        assert_eq!(s.states_pending(), 0);
        assert_eq!(s.states_dropped, 0);
    }

    /// Shutdown commits what is pending.
    #[test]
    fn shutdown_commits_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("w.redb")).unwrap());
        let account = store
            .register("s@example.com", "writer password", None)
            .unwrap();
        let scene = store.create_scene("s").unwrap();
        let ids = store
            .provision_avatars(
                account,
                &[NewAvatar {
                    name: "Solo".into(),
                    figure: String::new(),
                    scene,
                }],
            )
            .unwrap();
        let writer = Writer::spawn(Arc::clone(&store), WriterConfig::default(), |_| {}).unwrap();
        for k in 1..=5 {
            let mut s = super::tests_state(ids[0], k);
            s.scene = scene;
            writer.submit(SaveBatch {
                objects: Vec::new(),
                scene,
                states: vec![s],
            });
        }
        let stats = writer.shutdown();
        assert_eq!(stats.committed_batches, 5);
        assert_eq!(store.load_scene(scene).unwrap()[0].tick, 5);
    }
}

#[cfg(test)]
fn tests_state(avatar: u64, tick: u64) -> PcState {
    PcState {
        game: Vec::new(),
        avatar,
        scene: 1,
        position: [0.0, 0.0],
        heading: 0.0,
        action: 0,
        mount: 0,
        online: true,
        tick,
    }
}
