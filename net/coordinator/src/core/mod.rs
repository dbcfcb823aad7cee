//! The coordinator's state behind its lock: the cluster state machine, the
//! data service, the links, and the glue that turns messages into calls and
//! effects into messages.
//!
//! * `messages.rs` — the dispatch of each [`LinkMsg`](tessera_wire::LinkMsg)
//!   a link sends to its handler, and the registry's handlers;
//! * `sessions.rs` — login admission, sessions, attach and detach;
//! * `scene_events.rs` — what scenes report: attaches, detaches, portals;
//! * `placement.rs` — planned moves: an operator's move and drain, and a
//!   scene server's release of a scene it dropped for one;
//! * `placement_stream.rs` — a placement's saved states, streamed in
//!   chunks to the scene server;
//! * `effects.rs` — carrying out the cluster's
//!   [`Effect`](tessera_cluster::Effect)s, one function each;
//! * `io.rs` — the effects that need the disk (epochs, scene loads, portal
//!   moves), done by the data thread off the lock, in order;
//! * `lookups.rs` — what a link's message needs from the data service,
//!   read by its link task before the lock is taken;
//! * `shared.rs` — the lock itself, which measures how long it is held;
//! * `data.rs` — the data service: save batches, avatar lists;
//! * `replay.rs` — a gate's sessions across a new link: replayed, or
//!   ended (and kicked) when not replayed in time or refused;
//! * `chat.rs` — chat lines between sessions;
//! * `channels.rs` — the channels games make, and their messages;
//! * `links.rs` — the links and sending on them.

mod channels;
mod chat;
mod data;
mod effects;
pub(crate) mod io;
mod links;
mod lookups;
mod messages;
mod placement;
mod placement_stream;
mod replay;
mod scene_events;
mod sessions;
mod shared;
pub(crate) mod snapshots;

pub(crate) use self::shared::SharedCore;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tessera_cluster::{ClusterState, ClusterStatus, Effect, NodeId, SessionId};
use tessera_link::Link;
use tessera_persistence::{self as db, Store, Writer};
use tessera_sim::protocol::AvatarId;
use tessera_wire::WirePcState;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::login::Logins;

use self::io::{DataThread, IoState};
use self::links::LinkEntry;
use self::lookups::Looked;
use self::scene_events::Arrival;

/// Counters of one coordinator, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CoordinatorStats {
    /// Links accepted (after the handshake).
    pub links: u64,
    /// Links refused after the handshake (second link under a live name,
    /// messages before registering, a role that may not send a message).
    pub links_refused: u64,
    /// Messages refused with [`LinkMsg::Refused`](tessera_wire::LinkMsg::Refused).
    pub refused: u64,
    /// Sends that did not fit a link's queue, or had no link.
    pub sends_failed: u64,
    /// Save batches handed to the writer.
    pub batches: u64,
    /// Save batches refused for a stale epoch (a paused or replaced host).
    pub batches_stale: u64,
    /// Acknowledgements sent to scene servers for save batches now durable.
    pub save_acks: u64,
    /// Batches whose acknowledgement was forgotten because too many waited
    /// (a later, cumulative ack covers them).
    pub save_acks_dropped: u64,
    /// Durable writes of the coordinator's own (epochs, avatar scenes) that failed.
    pub persist_errors: u64,
    /// Effects dropped because too many batches waited behind a disk job
    /// (a stuck disk); the cluster places and attaches again.
    pub effects_dropped: u64,
    /// Scene events from a placement that is no longer current.
    pub events_stale: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions open now: in the table of the links that carry them, and
    /// in the cluster's directory. The two agree but for a moment.
    pub sessions_linked: u64,
    pub sessions_directory: u64,
    /// Gate sessions replays refused (the client kicked with the reason),
    /// and sessions a gate did not replay in time on its new link (ended).
    pub replays_refused: u64,
    pub replays_missed: u64,
    /// Attach requests accepted / refused.
    pub attaches: u64,
    pub attaches_refused: u64,
    /// Completed portal transfers.
    pub transfers: u64,
    /// Chat lines delivered.
    pub chat_lines: u64,
    /// Channel asks from scenes, and those refused (a bound, an unknown
    /// channel).
    pub channel_ops: u64,
    pub channel_ops_refused: u64,
    /// Messages sent to a channel's members or a list of avatars (by the
    /// game or a member), and the recipients skipped because offline.
    pub channel_messages: u64,
    pub channel_offline_skipped: u64,
    /// Channel lines of a session refused: not a member, or no such channel.
    pub channel_lines_refused: u64,
    /// Channels and memberships held now.
    pub channels: u64,
    pub channel_members: u64,
    /// Connect tokens issued, used once (burnt), refused (replayed, expired,
    /// unknown), replaced by the account's newer login (revoked), and issued
    /// but not used yet.
    pub tokens_issued: u64,
    pub tokens_burnt: u64,
    pub tokens_refused: u64,
    pub tokens_revoked: u64,
    pub tokens_pending: u64,
    /// Logins waiting in the queue.
    pub queued: u64,
    /// Scenes placed on a scene server (each with a new epoch).
    pub placements: u64,
    /// Placements held back because the scene's saved states could not be
    /// read (a failed writer flush or load); each is placed again later.
    pub placements_refused: u64,
    /// Saved scene objects a placement could not carry (over the bound of
    /// one announcement): the scene starts without them.
    pub objects_left_out: u64,
    /// Of `placements`, scenes placed again because the server that hosted
    /// them was lost (heartbeat timeout or link closed without a drop).
    pub failovers: u64,
    /// Nodes declared down for missed heartbeats.
    pub nodes_down: u64,
    /// Times the coordinator found it had stalled (its process stopped, its
    /// lock held or its runtime starved past two ticks); nodes were excused.
    pub stalls: u64,
}

/// Added to two tick periods to tell a stall from a late tick.
const STALL_SLACK_MS: u64 = 250;

/// Everything behind the coordinator's one lock. Handlers run to completion
/// under it and never wait on a peer or the disk.
pub(crate) struct Core {
    cluster: ClusterState,
    clock: Instant,
    store: Arc<Store>,
    /// Shared with the data thread's jobs, which flush it off the lock.
    writer: Option<Arc<Writer>>,
    /// Effects not carried out yet, by batch, in order: they wait behind
    /// the disk job in `io` (`io.rs`).
    backlog: VecDeque<VecDeque<Effect>>,
    /// The backlog's disk job, queued for the data thread or out with it.
    io: Option<IoState>,
    /// The thread that runs disk jobs off the lock (`None` once stopped,
    /// or in a core built without one).
    data: Option<DataThread>,
    /// What the link task read for the message being handled (`lookups.rs`).
    looked: Looked,
    scene_ids: BTreeMap<String, db::SceneId>,
    heartbeat_ms: u32,
    /// How often the ticker runs, ms.
    tick_ms: u32,
    /// The last time [`now`](Self::now) gave.
    last_now: u64,
    next_link: u64,
    links: BTreeMap<u64, LinkEntry>,
    node_links: BTreeMap<NodeId, u64>,
    /// Session → the link (gate or tool) that opened it.
    sessions: BTreeMap<SessionId, u64>,
    /// Sessions of a gate that registered on a new link, waiting for its
    /// replay, by the gate; and when each such gate's unreplayed sessions
    /// end unless it replays more.
    awaiting_replay: BTreeMap<SessionId, NodeId>,
    replay_deadlines: BTreeMap<NodeId, u64>,
    /// Portal transfers begun, by avatar.
    arrivals: BTreeMap<AvatarId, Arrival>,
    /// States to attach with on arrival, by avatar (consumed by the attach).
    arrival_states: BTreeMap<AvatarId, WirePcState>,
    /// Gates' last reported load: connected clients and open addresses.
    gate_load: BTreeMap<NodeId, (u32, Vec<String>)>,
    /// Avatar names, for chat (learned at attach).
    avatar_names: BTreeMap<AvatarId, String>,
    /// The channels games made (`channels.rs`).
    channels: channels::ChannelTable,
    logins: Logins,
    stats: CoordinatorStats,
    /// Snapshot requests waiting for their scene server, by request id.
    snapshots: BTreeMap<u64, tokio::sync::oneshot::Sender<snapshots::SnapshotReply>>,
    next_snapshot: u64,
    /// The server each scene was last placed on (to tell failovers apart).
    last_host: BTreeMap<String, NodeId>,
    /// Save batches handed to the writer, waiting for its commit to be
    /// acknowledged, in ticket order.
    save_acks: VecDeque<AckWaiting>,
}

/// A save batch waiting for the writer: link `link`'s batch `seq` is
/// durable once a commit covers `ticket`.
#[derive(Debug, Clone, Copy)]
struct AckWaiting {
    ticket: u64,
    link: u64,
    seq: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("links", &self.links.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        cluster: ClusterState,
        clock: Instant,
        store: Arc<Store>,
        writer: Writer,
        scene_ids: BTreeMap<String, db::SceneId>,
        heartbeat_ms: u32,
        tick_ms: u32,
        logins: Logins,
    ) -> Self {
        Self {
            cluster,
            clock,
            store,
            writer: Some(Arc::new(writer)),
            backlog: VecDeque::new(),
            io: None,
            data: None,
            looked: Looked::default(),
            scene_ids,
            heartbeat_ms,
            tick_ms,
            last_now: 0,
            next_link: 1,
            links: BTreeMap::new(),
            node_links: BTreeMap::new(),
            sessions: BTreeMap::new(),
            awaiting_replay: BTreeMap::new(),
            replay_deadlines: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            arrival_states: BTreeMap::new(),
            gate_load: BTreeMap::new(),
            avatar_names: BTreeMap::new(),
            channels: channels::ChannelTable::default(),
            logins,
            stats: CoordinatorStats::default(),
            snapshots: BTreeMap::new(),
            next_snapshot: 0,
            last_host: BTreeMap::new(),
            save_acks: VecDeque::new(),
        }
    }

    /// Milliseconds since the coordinator started: the cluster state's time.
    /// Every handler takes its time here before it calls the cluster state,
    /// which first learns what it missed: how long the coordinator itself
    /// could not listen, if it stalled (see [`stall_ms`](Self::stall_ms)),
    /// and when each node's last message arrived, however long it then
    /// waited to be handled. So neither a stall nor a busy lock expires a
    /// node that kept sending.
    fn now(&mut self) -> u64 {
        let now = self.ms_since_start(Instant::now());
        let gap = now.saturating_sub(self.last_now);
        self.last_now = self.last_now.max(now);
        if gap > self.stall_ms() {
            self.stats.stalls += 1;
            warn!(
                ms = gap,
                "the coordinator stalled: nodes are not held to the time it could not listen"
            );
            self.cluster.stalled(now, gap);
        }
        for (&node, link) in &self.node_links {
            if let Some(at) = self
                .links
                .get(link)
                .and_then(|l| l.sender.last_message_at())
            {
                let at = self.ms_since_start(at);
                self.cluster.heard(node, at);
            }
        }
        now
    }

    fn ms_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.clock).as_millis()).unwrap_or(u64::MAX)
    }

    /// A gap between two looks at the time longer than this means the
    /// coordinator stalled: the ticker looks every `tick_ms`, so only a
    /// stopped process, a lock held that long or a starved runtime makes one.
    fn stall_ms(&self) -> u64 {
        2 * u64::from(self.tick_ms) + STALL_SLACK_MS
    }

    /// The `/v1/status` snapshot, with each gate's reported client count.
    pub(crate) fn status(&self) -> ClusterStatus {
        let mut status = self.cluster.status();
        for g in &mut status.gates {
            if let Some(node) = self.cluster.node_by_name(&g.name) {
                g.online = self.gate_load.get(&node).map_or(0, |(n, _)| *n);
            }
        }
        status
    }

    /// The data service's store (for the HTTP API's blocking calls).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What happened to login tokens, resume keys and queue places, and
    /// the resume keys held now.
    pub(crate) fn login_counts(&self) -> (crate::login::LoginCounts, usize) {
        (self.logins.counts, self.logins.resume_keys())
    }

    /// Counters since start, the login ones included.
    pub(crate) fn stats(&self) -> CoordinatorStats {
        CoordinatorStats {
            tokens_issued: self.logins.counts.tokens_issued,
            tokens_burnt: self.logins.counts.tokens_burnt,
            tokens_refused: self.logins.counts.tokens_refused,
            tokens_revoked: self.logins.counts.tokens_revoked,
            tokens_pending: self.logins.pending() as u64,
            queued: self.logins.queued() as u64,
            sessions_linked: self.sessions.len() as u64,
            sessions_directory: self.cluster.session_count() as u64,
            channels: self.channels.len() as u64,
            channel_members: self.channels.memberships(),
            ..self.stats
        }
    }

    /// The write-behind writer's totals (`None` once closed).
    pub(crate) fn writer_stats(&self) -> Option<db::WriterStats> {
        self.writer.as_ref().map(|w| w.stats())
    }

    /// Bounds the channels games make.
    pub(crate) fn set_channel_limits(&mut self, limits: crate::config::ChannelLimits) {
        self.channels = channels::ChannelTable::new(limits);
    }

    /// Time passes for the cluster state (silent nodes expire).
    pub(crate) fn tick(&mut self) {
        let now = self.now();
        let effects = self.cluster.tick(now);
        self.apply(effects);
        self.expire_replays(now);
    }

    /// Starts the data thread, which reaches the core through `shared`.
    pub(crate) fn start_data_thread(
        &mut self,
        shared: std::sync::Weak<SharedCore>,
    ) -> std::io::Result<()> {
        self.data = Some(DataThread::spawn(Arc::clone(&self.store), shared)?);
        // Effects applied before the thread existed may wait on it already.
        if let (Some(IoState::Queued(_)), Some(d)) = (&self.io, &self.data) {
            d.wake();
        }
        Ok(())
    }

    /// Shutdown, under the lock: every link is closed, and the data thread
    /// and the writer are handed out to be stopped off it ([`Closing`]).
    pub(crate) fn close(&mut self) -> Closing {
        for l in self.links.values() {
            l.kill.cancel();
        }
        // What waits for the data thread is given up: it stops now, and a
        // queued job would keep the writer from shutting down.
        io::log_left(self);
        self.io = None;
        self.backlog.clear();
        Closing {
            data: self.data.take().and_then(DataThread::stop),
            writer: self.writer.take(),
        }
    }
}

/// What shutdown stops off the lock: the data thread (joined first, so no
/// job holds the writer), then the writer, which commits every pending save.
pub(crate) struct Closing {
    data: Option<JoinHandle<()>>,
    writer: Option<Arc<Writer>>,
}

impl Closing {
    /// Joins the data thread and shuts the writer down. Blocks.
    pub(crate) fn finish(self) {
        if let Some(t) = self.data
            && t.join().is_err()
        {
            warn!("the data thread panicked");
        }
        if let Some(w) = self.writer {
            match Arc::try_unwrap(w) {
                Ok(w) => {
                    let stats = w.shutdown();
                    info!(?stats, "writer stopped");
                }
                // A job still holds it: the last one to drop it commits.
                Err(w) => info!(stats = ?w.stats(), "writer stopping"),
            }
        }
    }
}

/// One link's life at the coordinator: messages go to the core in order
/// until the link closes, the node is declared down, or the coordinator
/// stops. What a message needs from the data service is read first, off
/// the lock (`lookups.rs`).
pub(crate) async fn handle_link(core: Arc<SharedCore>, link: Link, stop: CancellationToken) {
    let peer = link.peer().clone();
    let (sender, mut receiver) = link.split();
    let kill = CancellationToken::new();
    let (id, store) = {
        let mut c = core.lock();
        (
            c.add_link(peer, sender, kill.clone()),
            Arc::clone(c.store()),
        )
    };
    loop {
        tokio::select! {
            _ = kill.cancelled() => break,
            _ = stop.cancelled() => break,
            msg = receiver.recv() => match msg {
                Some(msg) => {
                    let looked = lookups::look_up(&core, &store, id, &msg).await;
                    core.lock().on_msg(id, msg, looked);
                }
                None => break,
            },
        }
    }
    core.lock().link_closed(id);
}
