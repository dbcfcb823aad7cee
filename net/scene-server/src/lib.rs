//! The networked **scene server**: a [`SceneHost`] driven by the coordinator
//! over a link, and serving gates (and tools) over links of its own.
//!
//! ```text
//!               coordinator link (reconnects, re-registers with what it hosts)
//!  coordinator ◀──────────────────────────────▶ coordinator task ── place / drop / attach ──▶ SceneHost
//!      ▲   Register, Heartbeat(load), SceneReady,       │  ▲                                   │ per scene thread
//!      │   Event, SaveBatch, Deregister                 │  └── LinkSink (merged save batches) ◀─┤
//!      │                                                └── pending events ◀── pump task ◀──────┤ OutputQueue
//!  gates ──Command(Input)──▶ gate link tasks ──command()──▶ SceneHost            │
//!  gates ◀──Replication──────────────────────────────────── pump task (routes client → gate)
//! ```
//!
//! * **Placement** comes from the coordinator with the scene's last flushed
//!   states (`PlaceScene`); the server answers `SceneReady` once the scene
//!   ticks. A placement of a scene already hosted at an older epoch replaces
//!   it **without writing** (the old one is stale by definition).
//! * **Attaches** come from the coordinator (`AttachAt`, `DetachAt`,
//!   `SyncAttached`); each names the gate node whose link gets the client's
//!   replication. Gates send only inputs, and only for their own clients.
//! * **Saves** go through [`LinkSink`] to the coordinator (the data service),
//!   merged per avatar while the link is down, so a coordinator restart loses
//!   nothing. `EpochStale` — for a save or a placement — drops the scene
//!   without writing anything more.
//! * **Shutdown** ([`SceneServer::shutdown`], SIGTERM in the binary): every
//!   scene is stopped with a final flush, every pending state is handed to
//!   the coordinator, then the server deregisters and closes the link.
//!
//! # Invariants
//!
//! **Invariant:** every queue is bounded and every drop is counted
//! ([`SceneServerStats`]): commands refused by a scene's queue, replication
//! that had no route or did not fit a gate link, events beyond
//! [`MAX_PENDING_EVENTS`] while the coordinator is unreachable.
//!
//! **Invariant:** a scene is hosted at most once here, under one epoch; a
//! stale placement writes nothing after it is known to be stale.

mod sink;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_link::{bump, lock};

use tessera_sim::{ClientId, Inbound, SceneDef, SceneEvent};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use tessera_host::{OutputQueue, Phase, RunnerSettings, SceneHost, SystemClock};
use tessera_link::{ConnectError, Connector, Link, LinkConfig, LinkSender, serve};
use tessera_wire::{
    Epoch, Heartbeat, LinkMsg, Placement, Register, Role, SceneCommand, Secret, WireEvent,
};

pub use sink::{LinkSink, LinkSinkStats};

/// Scene events kept while the coordinator link is down; older ones are
/// dropped (and counted) beyond this.
pub const MAX_PENDING_EVENTS: usize = 65_536;

/// The scene server's settings (the `[scene]` section of `tessera.toml`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SceneServerConfig {
    /// The coordinator's link address. Default `127.0.0.1:7000`.
    pub coordinator: String,
    /// This server's node name, unique in the cluster. Default: `scene-<pid>`.
    pub name: String,
    /// Link listener for gates. Default `127.0.0.1:0` (any free port; the
    /// address is registered with the coordinator, which hands it to gates).
    pub listen: String,
    /// Most scenes this server hosts (0 = no limit). Default 0.
    pub capacity: u32,
    /// Synthetic walkers spawned in every scene placed here (load tests). Default 0.
    pub walkers: u32,
    /// AOI radius of observers. Default 50.
    pub aoi_radius: f32,
    /// Heartbeat period before the coordinator says otherwise, ms. Default 500.
    pub heartbeat_ms: u32,
}

impl Default for SceneServerConfig {
    fn default() -> Self {
        Self {
            coordinator: "127.0.0.1:7000".into(),
            name: String::new(),
            listen: "127.0.0.1:0".into(),
            capacity: 0,
            walkers: 0,
            aoi_radius: 50.0,
            heartbeat_ms: 500,
        }
    }
}

/// A [`SceneServerConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SceneServerConfigError {
    #[error("scene.listen {0:?} is not an address (host:port)")]
    Listen(String),
    #[error("scene.coordinator must not be empty")]
    Coordinator,
    #[error("scene.name {0:?} is invalid: 1–64 characters of letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("scene.aoi_radius must be a finite number between 1 and 1000")]
    AoiRadius,
    #[error("scene.heartbeat_ms must be between 10 and 60000")]
    HeartbeatMs,
    #[error("scene.walkers must be at most 100000")]
    Walkers,
}

impl SceneServerConfig {
    /// The node name, defaulting to `scene-<pid>`.
    pub fn node_name(&self) -> String {
        if self.name.is_empty() {
            format!("scene-{}", std::process::id())
        } else {
            self.name.clone()
        }
    }

    pub fn validate(&self) -> Result<(), SceneServerConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(SceneServerConfigError::Listen(self.listen.clone()));
        }
        if self.coordinator.trim().is_empty() {
            return Err(SceneServerConfigError::Coordinator);
        }
        let name = self.node_name();
        if !tessera_wire::is_config_node_name(&name) {
            return Err(SceneServerConfigError::Name(name));
        }
        if !self.aoi_radius.is_finite() || !(1.0..=1000.0).contains(&self.aoi_radius) {
            return Err(SceneServerConfigError::AoiRadius);
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err(SceneServerConfigError::HeartbeatMs);
        }
        if self.walkers > 100_000 {
            return Err(SceneServerConfigError::Walkers);
        }
        Ok(())
    }

    fn runner_settings(&self) -> RunnerSettings {
        let mut s = RunnerSettings {
            walkers: self.walkers,
            ..RunnerSettings::default()
        };
        s.scene.aoi_radius = self.aoi_radius;
        s
    }
}

/// Why a scene server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SceneServerError {
    #[error(transparent)]
    Config(#[from] SceneServerConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] tessera_link::ConfigError),
    #[error("the coordinator refused this server for good: {0}")]
    Refused(ConnectError),
}

/// Counters of one scene server, since start.
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
    pub sink: LinkSinkStats,
}

#[derive(Debug, Default)]
struct Counters {
    placed: AtomicU64,
    dropped: AtomicU64,
    dropped_stale: AtomicU64,
    commands_refused: AtomicU64,
    inputs_refused: AtomicU64,
    commands_stale: AtomicU64,
    commands_foreign: AtomicU64,
    packets_sent: AtomicU64,
    packets_unrouted: AtomicU64,
    packets_dropped: AtomicU64,
    events_sent: AtomicU64,
    events_dropped: AtomicU64,
}

#[derive(Debug)]
struct Route {
    scene: String,
    gate: String,
}

#[derive(Debug, Default)]
struct Routes {
    clients: BTreeMap<ClientId, Route>,
    /// Gate node name → (link id, sender).
    gates: BTreeMap<String, (u64, LinkSender)>,
    next_link: u64,
}

struct Shared {
    name: String,
    walkers: u32,
    defs: BTreeMap<String, SceneDef>,
    settings: RunnerSettings,
    host: Mutex<SceneHost>,
    routes: Mutex<Routes>,
    sink: Arc<LinkSink>,
    events: Mutex<VecDeque<LinkMsg>>,
    events_ready: Notify,
    /// (scene, epoch) reported ready to the coordinator on the current link.
    ready: Mutex<BTreeSet<(String, Epoch)>>,
    counters: Counters,
}

impl Shared {
    fn stats(&self) -> SceneServerStats {
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
            sink: self.sink.stats(),
        }
    }

    fn epoch_of(&self, scene: &str) -> Option<Epoch> {
        lock(&self.host).runner(scene).map(|r| r.epoch())
    }

    /// Queues an attach or detach (inputs go their own way, and are counted
    /// apart).
    fn command(&self, scene: &str, cmd: Inbound) {
        let what = match &cmd {
            Inbound::Attach { client, .. } => ("attach", *client),
            Inbound::Detach { client } => ("detach", *client),
            Inbound::Input { client, .. } => ("input", *client),
        };
        if let Err(e) = lock(&self.host).command(scene, cmd) {
            bump(&self.counters.commands_refused);
            warn!(scene, client = what.1, "{} refused: {e}", what.0);
        }
    }

    fn push_event(&self, msg: LinkMsg) {
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
    fn drain_events(&self, link: &LinkSender) {
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
    fn drop_scene(&self, scene: &str, stale: bool) {
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

/// A running scene server. See the [module docs](self).
pub struct SceneServer {
    shared: Arc<Shared>,
    link_addr: SocketAddr,
    stop: CancellationToken,
    shutdown: CancellationToken,
    coordinator_task: Option<tokio::task::JoinHandle<Result<(), SceneServerError>>>,
    gate_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SceneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneServer")
            .field("name", &self.shared.name)
            .field("link_addr", &self.link_addr)
            .finish_non_exhaustive()
    }
}

impl SceneServer {
    /// Binds the gate listener and starts connecting to the coordinator.
    /// `defs` are the scenes this server can host, by name.
    pub async fn start(
        config: SceneServerConfig,
        secret: Secret,
        defs: BTreeMap<String, SceneDef>,
    ) -> Result<Self, SceneServerError> {
        config.validate()?;
        let name = config.node_name();
        let settings = config.runner_settings();
        let sink = Arc::new(LinkSink::new());
        let host = SceneHost::new(
            settings.clone(),
            Arc::new(SystemClock::new()),
            Arc::clone(&sink) as Arc<dyn tessera_host::SaveSink>,
        );
        let shared = Arc::new(Shared {
            name: name.clone(),
            walkers: config.walkers,
            defs,
            settings,
            host: Mutex::new(host),
            routes: Mutex::new(Routes::default()),
            sink,
            events: Mutex::new(VecDeque::new()),
            events_ready: Notify::new(),
            ready: Mutex::new(BTreeSet::new()),
            counters: Counters::default(),
        });
        let (listener, link_addr) =
            tessera_link::bind(&config.listen)
                .await
                .map_err(|source| SceneServerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let stop = CancellationToken::new();
        let shutdown = CancellationToken::new();

        let mut gate_cfg = LinkConfig::new(Role::SceneServer, name.clone(), secret.clone());
        gate_cfg.accept_roles = vec![Role::Gate, Role::Tool];
        gate_cfg.validate()?;
        let gate_task = {
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            let stopped = stop.clone();
            tokio::spawn(async move {
                let handler = move |link| {
                    let shared = Arc::clone(&shared);
                    let stop = stop.clone();
                    async move { gate_link(shared, link, stop).await }
                };
                if let Err(e) = serve(listener, gate_cfg, handler, stopped.cancelled_owned()).await
                {
                    warn!(error = %e, "gate listener stopped");
                }
            })
        };
        let coord_cfg = LinkConfig::new(Role::SceneServer, name.clone(), secret);
        coord_cfg.validate()?;
        let coordinator_task = tokio::spawn(coordinator_loop(
            Arc::clone(&shared),
            Connector::new(config.coordinator.clone(), coord_cfg),
            link_addr,
            config.capacity,
            Duration::from_millis(u64::from(config.heartbeat_ms)),
            stop.clone(),
            shutdown.clone(),
        ));
        info!(%name, %link_addr, coordinator = %config.coordinator, "scene server up");
        Ok(Self {
            shared,
            link_addr,
            stop,
            shutdown,
            coordinator_task: Some(coordinator_task),
            gate_task: Some(gate_task),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where gates connect.
    pub fn link_addr(&self) -> SocketAddr {
        self.link_addr
    }

    /// `(scene, epoch)` of every hosted scene.
    pub fn placements(&self) -> Vec<(String, Epoch)> {
        lock(&self.shared.host).placements()
    }

    pub fn stats(&self) -> SceneServerStats {
        self.shared.stats()
    }

    /// The load report of every hosted scene.
    pub fn load(&self) -> Vec<tessera_host::LoadReport> {
        lock(&self.shared.host).load()
    }

    /// Resolves when the server stops on its own: the coordinator refused it
    /// for good (wrong secret or version), which is returned as an error.
    pub async fn stopped(&mut self) -> Result<(), SceneServerError> {
        match self.coordinator_task.as_mut() {
            Some(t) => {
                let r = t.await.unwrap_or(Ok(()));
                self.coordinator_task = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// SIGTERM: every scene is stopped with a final flush, every pending
    /// state goes to the coordinator, then the server deregisters.
    pub async fn shutdown(mut self) -> Result<(), SceneServerError> {
        self.shutdown.cancel();
        let result = match self.coordinator_task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        self.stop.cancel();
        if let Some(t) = self.gate_task.take() {
            let _ = t.await;
        }
        info!(name = %self.shared.name, stats = ?self.shared.stats(), "scene server stopped");
        result
    }
}

impl Drop for SceneServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One gate's (or tool's) link: inputs in, replication out.
async fn gate_link(shared: Arc<Shared>, link: Link, stop: CancellationToken) {
    let gate = link.peer().node.clone();
    let (sender, mut receiver) = link.split();
    let id = {
        let mut routes = lock(&shared.routes);
        routes.next_link += 1;
        let id = routes.next_link;
        routes.gates.insert(gate.clone(), (id, sender.clone()));
        id
    };
    debug!(%gate, "gate linked");
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = receiver.recv() => match m { Some(m) => m, None => break },
        };
        match msg {
            LinkMsg::Command {
                scene,
                epoch,
                command: SceneCommand::Input { client, input },
            } => {
                let routed = lock(&shared.routes)
                    .clients
                    .get(&client)
                    .is_some_and(|r| r.gate == gate && r.scene == scene);
                if !routed {
                    bump(&shared.counters.commands_foreign);
                    continue;
                }
                match shared.epoch_of(&scene) {
                    Some(e) if e == epoch => shared.command(
                        &scene,
                        Inbound::Input {
                            client,
                            input,
                        },
                    ),
                    Some(current) => {
                        bump(&shared.counters.commands_stale);
                        let _ = sender.try_send(&LinkMsg::EpochStale { scene, current });
                    }
                    None => bump(&shared.counters.inputs_refused),
                }
            }
            LinkMsg::Inputs {
                scene,
                epoch,
                inputs,
            } => {
                let current = shared.epoch_of(&scene);
                if current != Some(epoch) {
                    shared
                        .counters
                        .commands_stale
                        .fetch_add(inputs.len() as u64, Ordering::Relaxed);
                    if let Some(current) = current {
                        let _ = sender.try_send(&LinkMsg::EpochStale { scene, current });
                    }
                    continue;
                }
                let routes = lock(&shared.routes);
                let host = lock(&shared.host);
                for (client, input) in inputs {
                    let routed = routes
                        .clients
                        .get(&client)
                        .is_some_and(|r| r.gate == gate && r.scene == scene);
                    if !routed {
                        bump(&shared.counters.commands_foreign);
                        continue;
                    }
                    let cmd = Inbound::Input {
                        client,
                        input,
                    };
                    if host.command(&scene, cmd).is_err() {
                        bump(&shared.counters.inputs_refused);
                    }
                }
            }
            other => {
                bump(&shared.counters.commands_foreign);
                let _ = sender.try_send(&LinkMsg::Refused {
                    reason: format!("a gate may only send inputs, not {}", other.kind()),
                });
            }
        }
    }
    let mut routes = lock(&shared.routes);
    if routes.gates.get(&gate).is_some_and(|(i, _)| *i == id) {
        routes.gates.remove(&gate);
    }
}

/// Forwards one scene's output: replication to gates, events to the coordinator.
async fn pump(shared: Arc<Shared>, scene: String, epoch: Epoch, output: Arc<OutputQueue>) {
    while let Some(batch) = output.pop().await {
        {
            // One batch per gate per tick (split past REPLICATION_BATCH_BYTES):
            // thousands of clients' packets cost a few frames, not thousands.
            let routes = lock(&shared.routes);
            let mut by_gate: BTreeMap<&str, (Vec<(ClientId, Vec<u8>)>, usize)> = BTreeMap::new();
            let flush = |gate: &str, packets: Vec<(ClientId, Vec<u8>)>| {
                let n = packets.len() as u64;
                let sent = routes.gates.get(gate).is_some_and(|(_, s)| {
                    s.try_send(&LinkMsg::ReplicationBatch { packets }).is_ok()
                });
                let c = if sent {
                    &shared.counters.packets_sent
                } else {
                    &shared.counters.packets_dropped
                };
                c.fetch_add(n, Ordering::Relaxed);
            };
            for (client, bytes) in &batch.packets {
                let Some(route) = routes.clients.get(client) else {
                    if *client > u64::from(shared.walkers) {
                        bump(&shared.counters.packets_unrouted);
                    }
                    continue;
                };
                let entry = by_gate.entry(route.gate.as_str()).or_default();
                entry.1 += bytes.len() + 16;
                entry.0.push((*client, bytes.to_vec()));
                if entry.1 >= tessera_wire::REPLICATION_BATCH_BYTES {
                    let packets = std::mem::take(&mut entry.0);
                    entry.1 = 0;
                    flush(route.gate.as_str(), packets);
                }
            }
            for (gate, (packets, _)) in by_gate {
                if !packets.is_empty() {
                    flush(gate, packets);
                }
            }
        }
        for ev in &batch.events {
            if let SceneEvent::Detached { client, .. } = ev {
                let mut routes = lock(&shared.routes);
                if routes.clients.get(client).is_some_and(|r| r.scene == scene) {
                    routes.clients.remove(client);
                }
            }
            shared.push_event(LinkMsg::Event {
                scene: scene.clone(),
                epoch,
                event: WireEvent::from(ev),
            });
        }
    }
    debug!(%scene, epoch, "output pump ended");
}

/// The coordinator side: connect, register, obey, report; reconnect when
/// the link drops; on shutdown flush and deregister.
async fn coordinator_loop(
    shared: Arc<Shared>,
    mut connector: Connector,
    link_addr: SocketAddr,
    capacity: u32,
    mut heartbeat: Duration,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), SceneServerError> {
    let mut seq = 0u64;
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = shutdown.cancelled() => {
                // No coordinator: flush the scenes into the sink anyway (a
                // later run cannot use it, but nothing is written stale).
                finish(&shared, None).await;
                return Ok(());
            }
            l = connector.connect() => l,
        };
        let link = match link {
            Ok(l) => l,
            Err(e) if e.is_transient() => continue,
            Err(e) => {
                error!(error = %e, "coordinator refused this scene server");
                return Err(SceneServerError::Refused(e));
            }
        };
        let (sender, mut receiver) = link.split();
        lock(&shared.ready).clear();
        let hosted = lock(&shared.host)
            .placements()
            .into_iter()
            .map(|(scene, epoch)| Placement { scene, epoch })
            .collect();
        if sender
            .send(&LinkMsg::Register(Register {
                addr: link_addr.to_string(),
                capacity,
                hosted,
            }))
            .await
            .is_err()
        {
            continue;
        }
        info!(coordinator = %connector.addr(), "registered with the coordinator");
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = shutdown.cancelled() => {
                    finish(&shared, Some((sender, receiver))).await;
                    return Ok(());
                }
                msg = receiver.recv() => match msg {
                    Some(LinkMsg::Registered { heartbeat_ms }) => {
                        let hb = Duration::from_millis(u64::from(heartbeat_ms.max(10)));
                        if hb != heartbeat {
                            heartbeat = hb;
                            beat = tokio::time::interval(heartbeat);
                        }
                    }
                    Some(msg) => on_coordinator_msg(&shared, &sender, msg).await,
                    None => break,
                },
                _ = beat.tick() => {
                    seq += 1;
                    let scenes = lock(&shared.host)
                        .load()
                        .iter()
                        .filter(|l| l.phase != Phase::Failed && l.phase != Phase::Stopped)
                        .map(|l| l.to_wire())
                        .collect();
                    let _ = sender.try_send(&LinkMsg::Heartbeat(Heartbeat {
                        seq,
                        scenes,
                        ..Heartbeat::default()
                    }));
                    reap_failed(&shared).await;
                }
                _ = poll.tick() => report_ready(&shared, &sender),
                _ = shared.sink.notified() => shared.sink.drain(&sender),
                _ = shared.events_ready.notified() => shared.drain_events(&sender),
            }
            // Whatever did not fit before may fit now.
            shared.drain_events(&sender);
            shared.sink.drain(&sender);
        }
        warn!("coordinator link lost; reconnecting");
    }
}

/// Scenes whose thread panicked are dropped so the coordinator re-places them.
async fn reap_failed(shared: &Arc<Shared>) {
    let failed: Vec<String> = lock(&shared.host)
        .load()
        .into_iter()
        .filter(|l| l.phase == Phase::Failed)
        .map(|l| l.scene)
        .collect();
    for scene in failed {
        error!(%scene, "scene thread failed; dropping it");
        let s = Arc::clone(shared);
        let _ = tokio::task::spawn_blocking(move || s.drop_scene(&scene, true)).await;
    }
}

fn report_ready(shared: &Shared, sender: &LinkSender) {
    let running: Vec<(String, Epoch)> = lock(&shared.host)
        .load()
        .into_iter()
        .filter(|l| l.phase == Phase::Running)
        .map(|l| (l.scene, l.epoch))
        .collect();
    let mut ready = lock(&shared.ready);
    for (scene, epoch) in running {
        if ready.contains(&(scene.clone(), epoch)) {
            continue;
        }
        if sender
            .try_send(&LinkMsg::SceneReady {
                scene: scene.clone(),
                epoch,
            })
            .is_ok()
        {
            info!(%scene, epoch, "scene ready");
            ready.insert((scene, epoch));
        }
    }
}

async fn on_coordinator_msg(shared: &Arc<Shared>, sender: &LinkSender, msg: LinkMsg) {
    match msg {
        LinkMsg::PlaceScene {
            scene,
            epoch,
            states,
        } => {
            let Some(def) = shared.defs.get(&scene).cloned() else {
                warn!(%scene, "placement of a scene this server does not know");
                let _ = sender.try_send(&LinkMsg::Refused {
                    reason: format!("scene {scene:?} is not in this server's scene folder"),
                });
                return;
            };
            match shared.epoch_of(&scene) {
                Some(e) if e == epoch => return,
                Some(e) if e > epoch => return,
                Some(_) => {
                    let s = Arc::clone(shared);
                    let sc = scene.clone();
                    let _ = tokio::task::spawn_blocking(move || s.drop_scene(&sc, true)).await;
                }
                None => {}
            }
            let states = states.into_iter().map(Into::into).collect();
            let placed =
                lock(&shared.host).place_with(&scene, def, epoch, states, shared.settings.clone());
            match placed {
                Ok(()) => {
                    bump(&shared.counters.placed);
                    info!(%scene, epoch, "placed");
                    if let Some(output) = lock(&shared.host).output(&scene) {
                        tokio::spawn(pump(Arc::clone(shared), scene, epoch, output));
                    }
                }
                Err(e) => error!(%scene, epoch, error = %e, "placement failed"),
            }
        }
        LinkMsg::DropScene { scene, epoch } => {
            if shared.epoch_of(&scene) == Some(epoch) {
                let s = Arc::clone(shared);
                let _ = tokio::task::spawn_blocking(move || s.drop_scene(&scene, false)).await;
                shared.sink.drain(sender);
            }
        }
        LinkMsg::EpochStale { scene, current } => {
            if shared.epoch_of(&scene).is_some_and(|e| e < current) {
                warn!(%scene, current, "our placement is stale; dropping it without writing");
                let s = Arc::clone(shared);
                let _ = tokio::task::spawn_blocking(move || s.drop_scene(&scene, true)).await;
            } else {
                // A stale batch from an earlier placement here: nothing to keep.
                shared.sink.discard(&scene);
            }
        }
        LinkMsg::AttachAt {
            scene,
            epoch,
            session,
            avatar,
            gate,
            state,
        } => {
            if shared.epoch_of(&scene) != Some(epoch) {
                bump(&shared.counters.commands_stale);
                return;
            }
            lock(&shared.routes).clients.insert(
                session,
                Route {
                    scene: scene.clone(),
                    gate,
                },
            );
            shared.command(
                &scene,
                Inbound::Attach {
                    client: session,
                    avatar,
                    state: state.map(Into::into),
                    figure: 0,
                },
            );
        }
        LinkMsg::DetachAt {
            scene,
            epoch,
            session,
            ..
        } => {
            if shared.epoch_of(&scene) != Some(epoch) {
                bump(&shared.counters.commands_stale);
                return;
            }
            shared.command(&scene, Inbound::Detach { client: session });
        }
        LinkMsg::SyncAttached {
            scene,
            epoch,
            attached,
        } => {
            if shared.epoch_of(&scene) != Some(epoch) {
                bump(&shared.counters.commands_stale);
                return;
            }
            let keep: BTreeSet<ClientId> = attached.iter().map(|a| a.session).collect();
            let extra: Vec<ClientId> = lock(&shared.routes)
                .clients
                .iter()
                .filter(|(c, r)| r.scene == scene && !keep.contains(c))
                .map(|(c, _)| *c)
                .collect();
            for client in extra {
                shared.command(&scene, Inbound::Detach { client });
            }
            for a in attached {
                lock(&shared.routes).clients.insert(
                    a.session,
                    Route {
                        scene: scene.clone(),
                        gate: a.gate,
                    },
                );
                shared.command(
                    &scene,
                    Inbound::Attach {
                        client: a.session,
                        avatar: a.avatar,
                        state: None,
                        figure: 0,
                    },
                );
            }
        }
        LinkMsg::Refused { reason } => warn!(%reason, "the coordinator refused a message"),
        other => debug!(
            kind = other.kind(),
            "unexpected message from the coordinator"
        ),
    }
}

/// Shutdown: stop every scene with a final flush, hand everything pending to
/// the coordinator, deregister, close.
async fn finish(shared: &Arc<Shared>, link: Option<(LinkSender, tessera_link::LinkReceiver)>) {
    let s = Arc::clone(shared);
    let reports = tokio::task::spawn_blocking(move || {
        let mut host = lock(&s.host);
        let placeholder = SceneHost::new(
            s.settings.clone(),
            Arc::new(SystemClock::new()),
            Arc::clone(&s.sink) as Arc<dyn tessera_host::SaveSink>,
        );
        std::mem::replace(&mut *host, placeholder).shutdown()
    })
    .await
    .unwrap_or_default();
    for (scene, r) in &reports {
        match r {
            Ok(r) => info!(%scene, ticks = r.load.ticks, saves = r.load.saves, "scene flushed"),
            Err(e) => warn!(%scene, error = %e, "scene stopped with an error"),
        }
    }
    let Some((sender, receiver)) = link else {
        if shared.sink.has_pending() {
            warn!("coordinator unreachable at shutdown: the last flush is lost");
        }
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (shared.sink.has_pending() || !lock(&shared.events).is_empty())
        && tokio::time::Instant::now() < deadline
    {
        shared.drain_events(&sender);
        shared.sink.drain(&sender);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = sender
        .send(&LinkMsg::Deregister {
            reason: "shutdown".into(),
        })
        .await;
    let link = Link::from_parts(sender, receiver);
    let reason = link.close().await;
    info!(?reason, "deregistered; coordinator link closed");
}
