//! What the server's tasks share ([`ServerState`]): the scene host, the
//! client → gate routes, the save sink, the events waiting for the
//! coordinator, and the counters behind [`SceneServerStats`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tessera_host::{RunnerSettings, SceneHost};
use tessera_link::{LinkSender, LinkStats, bump, lock};
use tessera_sim::{ClientId, Inbound, SceneDef};
use tessera_wire::{Epoch, LinkMsg};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::assembly::{Assembly, AssemblyStats};
use crate::{LinkSink, LinkSinkStats, MAX_PENDING_EVENTS};

/// ServerCounters of one scene server, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SceneServerStats {
    pub placed: u64,
    pub dropped: u64,
    pub dropped_stale: u64,
    /// Attaches and detaches a scene's queue refused (full), or that named
    /// no hosted scene. Logged each: the player stays outside.
    pub commands_refused: u64,
    /// Inputs a scene's queue refused (full: the scene thread is behind), or
    /// that named no hosted scene.
    pub inputs_refused: u64,
    /// Commands for another epoch than the hosted one (answered `EpochStale`).
    pub commands_stale: u64,
    /// Input commands from a gate for a client not routed to it.
    pub commands_foreign: u64,
    pub packets_sent: u64,
    /// Packets for a client with no route (not attached through a gate).
    pub packets_unrouted: u64,
    /// Packets that did not fit the gate link's queue, or whose gate is gone.
    pub packets_dropped: u64,
    pub events_sent: u64,
    /// Events dropped while the coordinator was unreachable (beyond the cap).
    pub events_dropped: u64,
    /// Game events (and kicks) for a client with no route, and those that
    /// did not fit the gate link's queue.
    pub game_events_unrouted: u64,
    pub game_events_dropped: u64,
    pub sink: LinkSinkStats,
    /// Placements' states put back together from their chunks.
    pub assembly: AssemblyStats,
}

#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    pub(crate) placed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) dropped_stale: AtomicU64,
    pub(crate) commands_refused: AtomicU64,
    pub(crate) inputs_refused: AtomicU64,
    pub(crate) commands_stale: AtomicU64,
    pub(crate) commands_foreign: AtomicU64,
    pub(crate) packets_sent: AtomicU64,
    pub(crate) packets_unrouted: AtomicU64,
    pub(crate) packets_dropped: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) game_events_unrouted: AtomicU64,
    pub(crate) game_events_dropped: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) scene: String,
    pub(crate) gate: String,
}

#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) clients: BTreeMap<ClientId, Route>,
    /// Gate node name → (link id, sender).
    pub(crate) gates: BTreeMap<String, (u64, LinkSender)>,
    pub(crate) next_link: u64,
}

/// What the server's tasks share: the host, the routes, the sink and the
/// pending events.
pub(crate) struct ServerState {
    pub(crate) name: String,
    pub(crate) walkers: u32,
    pub(crate) defs: BTreeMap<String, SceneDef>,
    pub(crate) settings: RunnerSettings,
    pub(crate) host: Mutex<SceneHost>,
    pub(crate) routes: Mutex<Routes>,
    pub(crate) sink: Arc<LinkSink>,
    pub(crate) events: Mutex<VecDeque<LinkMsg>>,
    pub(crate) events_ready: Notify,
    /// (scene, epoch) reported ready to the coordinator on the current link.
    pub(crate) ready: Mutex<BTreeSet<(String, Epoch)>>,
    /// Scenes dropped (with a flush) on the coordinator's word, to report
    /// released once the sink holds none of their states.
    pub(crate) releasing: Mutex<Vec<(String, Epoch)>>,
    /// Placements whose states are still arriving in chunks.
    pub(crate) assembly: Mutex<Assembly>,
    pub(crate) counters: ServerCounters,
    /// Registered with the coordinator on the current link.
    pub(crate) registered: AtomicBool,
    /// The coordinator loop has ended (refused for good, or stopped).
    pub(crate) coordinator_done: AtomicBool,
    /// Counters of the gate listener's links and of the coordinator client's.
    pub(crate) gate_links: Arc<LinkStats>,
    pub(crate) coordinator_links: Arc<LinkStats>,
}

impl ServerState {
    pub(crate) fn stats(&self) -> SceneServerStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SceneServerStats {
            placed: g(&c.placed),
            dropped: g(&c.dropped),
            dropped_stale: g(&c.dropped_stale),
            commands_refused: g(&c.commands_refused),
            inputs_refused: g(&c.inputs_refused),
            commands_stale: g(&c.commands_stale),
            commands_foreign: g(&c.commands_foreign),
            packets_sent: g(&c.packets_sent),
            packets_unrouted: g(&c.packets_unrouted),
            packets_dropped: g(&c.packets_dropped),
            events_sent: g(&c.events_sent),
            events_dropped: g(&c.events_dropped),
            game_events_unrouted: g(&c.game_events_unrouted),
            game_events_dropped: g(&c.game_events_dropped),
            sink: self.sink.stats(),
            assembly: lock(&self.assembly).stats(),
        }
    }

    pub(crate) fn epoch_of(&self, scene: &str) -> Option<Epoch> {
        lock(&self.host).runner(scene).map(|r| r.epoch())
    }

    /// Queues an attach or detach (inputs go their own way, and are counted
    /// apart).
    pub(crate) fn command(&self, scene: &str, cmd: Inbound) {
        let what = match &cmd {
            Inbound::Attach { client, .. } => ("attach", *client),
            Inbound::Detach { client } => ("detach", *client),
            Inbound::Input { client, .. } => ("input", *client),
            Inbound::Ack { client, .. } => ("ack", *client),
            Inbound::Action { client, .. } => ("action", *client),
        };
        if let Err(e) = lock(&self.host).command(scene, cmd) {
            bump(&self.counters.commands_refused);
            warn!(scene, client = what.1, "{} refused: {e}", what.0);
        }
    }

    pub(crate) fn push_event(&self, msg: LinkMsg) {
        {
            let mut q = lock(&self.events);
            if q.len() >= MAX_PENDING_EVENTS {
                q.pop_front();
                bump(&self.counters.events_dropped);
            }
            q.push_back(msg);
        }
        self.events_ready.notify_one();
    }

    /// Hands waiting events to the coordinator link, in order.
    pub(crate) fn drain_events(&self, link: &LinkSender) {
        let mut q = lock(&self.events);
        while let Some(msg) = q.front() {
            if link.try_send(msg).is_err() {
                return;
            }
            q.pop_front();
            bump(&self.counters.events_sent);
        }
    }

    /// Stops hosting `scene` (blocking: joins the scene thread).
    pub(crate) fn drop_scene(&self, scene: &str, stale: bool) {
        if stale {
            self.sink.discard(scene);
        }
        let result = lock(&self.host).drop_scene(scene, stale);
        if stale {
            self.sink.discard(scene);
            bump(&self.counters.dropped_stale);
        } else {
            bump(&self.counters.dropped);
        }
        lock(&self.routes).clients.retain(|_, r| r.scene != scene);
        lock(&self.ready).retain(|(s, _)| s != scene);
        match result {
            Ok(report) => info!(%scene, stale, ticks = report.load.ticks, "scene dropped"),
            Err(e) => warn!(%scene, error = %e, "scene drop"),
        }
    }
}
