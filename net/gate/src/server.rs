//! The **gate process**: UDP clients in (the [`Gate`] transport), the
//! cluster behind (a link to the coordinator for sessions, links to scene
//! servers for inputs and replication).
//!
//! One agent per client, all driven by one task that owns every agent's
//! state (no locks), fed by the transport's events, the coordinator link and
//! the scene links:
//!
//! ```text
//!  client ─UDP─▶ Gate ──GateEvent──▶ agent loop ──OpenSession/AttachAvatar/Chat…──▶ coordinator
//!                  ▲                     │ ▲                                           │
//!                  │                     │ └──────────Session{…}, ChatTo───────────────┘
//!                  │                     └──Command(Input)──▶ scene link ──▶ scene server
//!                  └──────────── Replication (unchanged bytes) ◀── scene link task
//! ```
//!
//! The flow of one client: netcode handshake with a token from login →
//! `OpenSession` with the token's client id and nonce (the coordinator burns
//! the nonce: a replayed token is refused here) → `Welcome` + avatar list →
//! create / select → `AttachAvatar` → `Routed` (connect to that scene
//! server) → `Attached` → `Entered`; inputs go to the scene server, the
//! scene's packets come back as they are. A disconnect closes the session:
//! the avatar is detached and stays in its scene, offline.
//!
//! **Invariant:** a client is disconnected — and its memory freed — when it
//! sends a message that does not decode, stays silent past the idle timeout,
//! floods (the transport's token buckets), or stops acknowledging (its
//! reliable channel backs up); each is counted in [`GateServerStats`].
//!
//! **Invariant:** the agent loop never waits on a peer: sends to the
//! coordinator and scene servers are `try_send` into bounded link queues,
//! drops are counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_link::bump;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{AdmitAll, Channel, DisconnectReason, Gate, GateConfig, GateEvent, GateSendError};
use tessera_link::{ConnectError, Connector, LinkConfig, LinkSender, connect};
use tessera_proto::client::NETCODE_PROTOCOL_ID;
use tessera_proto::{ClientMsg, ServerMsg};
use tessera_wire::{Epoch, Heartbeat, Input, LinkMsg, Register, Role, Secret, SessionEvent};

/// Disconnect codes the gate uses (the client sees "disconnected by server";
/// a [`ServerMsg::Kicked`] with the reason goes first when there is one).
pub mod codes {
    pub const KICKED: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const IDLE: u16 = 3;
    pub const UNAVAILABLE: u16 = 4;
}

/// The gate's settings (the `[gate]` section of `tessera.toml`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateServerConfig {
    /// The coordinator's link address. Default `127.0.0.1:7000`.
    pub coordinator: String,
    /// Node name, unique in the cluster. Default `gate-<pid>`.
    pub name: String,
    /// First UDP listener address. Default `127.0.0.1:7300`.
    pub listen: String,
    /// UDP listeners (on consecutive ports from `listen`, or each on a free
    /// port when `listen` has port 0); netcode takes 1024 clients per
    /// listener. Default 3.
    pub listeners: u16,
    /// A client silent for this long is disconnected, ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// A client that has not completed its session this long after
    /// connecting is disconnected, ms. Default 10000.
    pub open_timeout_ms: u64,
    /// Heartbeat period, ms. Default 500.
    pub heartbeat_ms: u32,
    /// Largest message a client may send, bytes. Default 1024.
    pub max_message_bytes: usize,
    /// Kernel receive and send buffer per UDP listener, bytes; 0 keeps the
    /// kernel's default. Default 4 MiB (Linux grants at most
    /// `net.core.rmem_max`). The kernel's ~208 KiB default overflows when
    /// the gate is busy for a few milliseconds.
    pub socket_buffer_bytes: usize,
}

impl Default for GateServerConfig {
    fn default() -> Self {
        Self {
            coordinator: "127.0.0.1:7000".into(),
            name: String::new(),
            listen: "127.0.0.1:7300".into(),
            listeners: 3,
            idle_timeout_ms: 30_000,
            open_timeout_ms: 10_000,
            heartbeat_ms: 500,
            max_message_bytes: 1024,
            socket_buffer_bytes: 4 << 20,
        }
    }
}

impl GateServerConfig {
    pub fn node_name(&self) -> String {
        if self.name.is_empty() {
            format!("gate-{}", std::process::id())
        } else {
            self.name.clone()
        }
    }

    /// Checks every field; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        let first: SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "gate.listen {:?} is not an address (host:port)",
                self.listen
            )
        })?;
        if !(1..=64).contains(&self.listeners) {
            return Err("gate.listeners must be between 1 and 64".into());
        }
        if first.port() != 0 && u32::from(first.port()) + u32::from(self.listeners) > 65_536 {
            return Err("gate.listen: not enough ports above it for gate.listeners".into());
        }
        if self.coordinator.trim().is_empty() {
            return Err("gate.coordinator must not be empty".into());
        }
        if self.idle_timeout_ms < 1000 || self.open_timeout_ms < 1000 {
            return Err("gate.idle_timeout_ms and gate.open_timeout_ms must be ≥ 1000".into());
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err("gate.heartbeat_ms must be between 10 and 60000".into());
        }
        if !(64..=16_384).contains(&self.max_message_bytes) {
            return Err("gate.max_message_bytes must be between 64 and 16384".into());
        }
        if self.socket_buffer_bytes > 1 << 30 {
            return Err(
                "gate.socket_buffer_bytes must be at most 1 GiB (0 keeps the kernel's)".into(),
            );
        }
        let name = self.node_name();
        if !tessera_wire::is_config_node_name(&name) {
            return Err(format!("gate.name {name:?} is invalid"));
        }
        Ok(())
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        let Ok(first) = self.listen.parse::<SocketAddr>() else {
            return Vec::new();
        };
        (0..self.listeners)
            .map(|i| {
                let mut a = first;
                if first.port() != 0 {
                    a.set_port(first.port() + i);
                }
                a
            })
            .collect()
    }
}

/// Counters of one gate process.
#[derive(Debug, Default)]
pub struct GateServerStats {
    pub clients: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub malformed: AtomicU64,
    pub idle_kicks: AtomicU64,
    pub cluster_kicks: AtomicU64,
    pub inputs: AtomicU64,
    pub inputs_dropped: AtomicU64,
    pub packets: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub packets_unrouted: AtomicU64,
    pub chat_delivered: AtomicU64,
    pub to_coordinator_dropped: AtomicU64,
    pub told_dropped: AtomicU64,
}

/// A snapshot of [`GateServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct GateServerSnapshot {
    pub clients: u64,
    pub sessions_opened: u64,
    pub sessions_refused: u64,
    pub malformed: u64,
    pub idle_kicks: u64,
    pub cluster_kicks: u64,
    pub inputs: u64,
    pub inputs_dropped: u64,
    /// Replication packets from scenes handed to a client's listener.
    pub packets: u64,
    /// Replication packets dropped because the listener's queue was (three
    /// quarters) full.
    pub packets_dropped: u64,
    /// Replication packets for a client no listener has (it has just left,
    /// and its scene sends until the detach reaches it).
    pub packets_unrouted: u64,
    pub chat_delivered: u64,
    pub to_coordinator_dropped: u64,
    /// Reliable messages to a client that found its listener's queue full
    /// (each is logged, and the client disconnected: its session cannot go
    /// on without the message).
    pub told_dropped: u64,
}

impl GateServerStats {
    pub fn snapshot(&self) -> GateServerSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GateServerSnapshot {
            clients: g(&self.clients),
            sessions_opened: g(&self.sessions_opened),
            sessions_refused: g(&self.sessions_refused),
            malformed: g(&self.malformed),
            idle_kicks: g(&self.idle_kicks),
            cluster_kicks: g(&self.cluster_kicks),
            inputs: g(&self.inputs),
            inputs_dropped: g(&self.inputs_dropped),
            packets: g(&self.packets),
            packets_dropped: g(&self.packets_dropped),
            packets_unrouted: g(&self.packets_unrouted),
            chat_delivered: g(&self.chat_delivered),
            to_coordinator_dropped: g(&self.to_coordinator_dropped),
            told_dropped: g(&self.told_dropped),
        }
    }
}

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum GateServerError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] super::GateError),
    #[error(transparent)]
    Link(#[from] tessera_link::ConfigError),
    #[error("the coordinator refused this gate for good: {0}")]
    Refused(ConnectError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Open,
}

#[derive(Debug)]
struct Route {
    scene: String,
    epoch: Epoch,
    server: String,
}

#[derive(Debug)]
struct Agent {
    account: u64,
    /// The avatar attached for this session (replayed after a coordinator restart).
    avatar: Option<u64>,
    phase: Phase,
    connected_at: Instant,
    last_heard: Instant,
    route: Option<Route>,
}

/// What the link tasks tell the agent loop.
enum Inbox {
    Coordinator(LinkMsg),
    CoordinatorUp(LinkSender),
    CoordinatorDown,
    SceneUp(String, LinkSender),
    SceneDown(String),
}

/// A running gate. See the [module docs](self).
pub struct GateServer {
    name: String,
    addresses: Vec<SocketAddr>,
    stats: Arc<GateServerStats>,
    transport: Arc<super::GateStats>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), GateServerError>>>,
}

impl std::fmt::Debug for GateServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateServer")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl GateServer {
    /// Binds the UDP listeners and starts serving; connects to the coordinator.
    pub async fn start(config: GateServerConfig, secret: Secret) -> Result<Self, GateServerError> {
        config.validate().map_err(GateServerError::Config)?;
        let name = config.node_name();
        let mut gcfg = GateConfig::new(NETCODE_PROTOCOL_ID, secret.derive_key("netcode"));
        gcfg.max_message_bytes = config.max_message_bytes;
        gcfg.socket_buffer_bytes = config.socket_buffer_bytes;
        let (gate, events) = Gate::bind(gcfg, &config.addrs(), Arc::new(AdmitAll)).await?;
        let addresses = gate.addresses();
        let transport = Arc::clone(gate.stats());
        let gate = Arc::new(gate);
        let stats = Arc::new(GateServerStats::default());
        let stop = CancellationToken::new();
        let link_cfg = LinkConfig::new(Role::Gate, name.clone(), secret);
        link_cfg.validate()?;
        let (inbox_tx, inbox_rx) = mpsc::channel(16_384);
        let coordinator = tokio::spawn(coordinator_task(
            Connector::new(config.coordinator.clone(), link_cfg.clone()),
            addresses.clone(),
            inbox_tx.clone(),
            stop.clone(),
        ));
        let task = tokio::spawn(
            AgentLoop {
                config: config.clone(),
                gate,
                stats: Arc::clone(&stats),
                link_cfg,
                inbox_tx,
                coordinator: None,
                scenes: BTreeMap::new(),
                agents: BTreeMap::new(),
                kicks: Vec::new(),
                seq: 0,
                inputs: BTreeMap::new(),
            }
            .run(events, inbox_rx, stop.clone(), coordinator),
        );
        info!(%name, ?addresses, coordinator = %config.coordinator, "gate up");
        Ok(Self {
            name,
            addresses,
            stats,
            transport,
            stop,
            task: Some(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UDP listeners' addresses.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    pub fn stats(&self) -> GateServerSnapshot {
        self.stats.snapshot()
    }

    /// The transport's counters (screen, rate limits, drops).
    pub fn transport_stats(&self) -> super::GateStatsSnapshot {
        self.transport.snapshot()
    }

    /// Resolves if the gate stops on its own (refused by the coordinator).
    pub async fn stopped(&mut self) -> Result<(), GateServerError> {
        match self.task.as_mut() {
            Some(t) => {
                let r = t.await.unwrap_or(Ok(()));
                self.task = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// Disconnects every client (their sessions close, avatars detach) and stops.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        info!(
            name = %self.name,
            stats = ?self.stats.snapshot(),
            transport = ?self.transport.snapshot(),
            "gate stopped"
        );
    }
}

impl Drop for GateServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keeps the coordinator link up: registers, forwards what it hears.
async fn coordinator_task(
    mut connector: Connector,
    addresses: Vec<SocketAddr>,
    inbox: mpsc::Sender<Inbox>,
    stop: CancellationToken,
) -> Result<(), GateServerError> {
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            l = connector.connect() => l,
        };
        let link = match link {
            Ok(l) => l,
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(GateServerError::Refused(e)),
        };
        let (sender, mut receiver) = link.split();
        let addr = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if sender
            .send(&LinkMsg::Register(Register {
                addr,
                capacity: 0,
                hosted: Vec::new(),
            }))
            .await
            .is_err()
        {
            continue;
        }
        if inbox.send(Inbox::CoordinatorUp(sender)).await.is_err() {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = receiver.recv() => match m {
                    Some(m) => if inbox.send(Inbox::Coordinator(m)).await.is_err() { return Ok(()) },
                    None => break,
                },
            }
        }
        warn!("coordinator link lost; reconnecting");
        if inbox.send(Inbox::CoordinatorDown).await.is_err() {
            return Ok(());
        }
    }
}

/// Hands a scene's replication packet to its client's listener, counting
/// where it went.
fn forward_packet(gate: &Gate, stats: &GateServerStats, client: u64, bytes: Vec<u8>) {
    match gate.send(client, Channel::Unreliable, bytes) {
        Ok(()) => bump(&stats.packets),
        Err(GateSendError::UnknownClient) => bump(&stats.packets_unrouted),
        Err(_) => bump(&stats.packets_dropped),
    }
}

/// One scene server link: replication straight to the clients.
async fn scene_task(
    server: String,
    addr: String,
    cfg: LinkConfig,
    gate: Arc<Gate>,
    stats: Arc<GateServerStats>,
    inbox: mpsc::Sender<Inbox>,
    stop: CancellationToken,
) {
    let link = tokio::select! {
        _ = stop.cancelled() => return,
        l = connect(&addr, &cfg) => l,
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => {
            warn!(%server, %addr, error = %e, "cannot reach scene server");
            let _ = inbox.send(Inbox::SceneDown(server)).await;
            return;
        }
    };
    let (sender, mut receiver) = link.split();
    if inbox
        .send(Inbox::SceneUp(server.clone(), sender))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = receiver.recv() => match m { Some(m) => m, None => break },
        };
        match msg {
            LinkMsg::Replication { client, bytes } => {
                forward_packet(&gate, &stats, client, bytes);
            }
            LinkMsg::ReplicationBatch { packets } => {
                for (client, bytes) in packets {
                    forward_packet(&gate, &stats, client, bytes);
                }
            }
            LinkMsg::EpochStale { scene, current } => {
                debug!(%scene, current, "inputs for a stale placement");
            }
            other => debug!(
                kind = other.kind(),
                "unexpected message from a scene server"
            ),
        }
    }
    let _ = inbox.send(Inbox::SceneDown(server)).await;
}

enum SceneLink {
    Connecting,
    Up(LinkSender),
}

/// How long inputs are gathered before they go to the scene servers.
const INPUT_FLUSH: Duration = Duration::from_millis(5);
/// Gate events the agent loop handles per wake before it looks at its other
/// branches (inbox, timers) again. One event per `select!` made it yield to
/// the runtime every 128 events (tokio's cooperative budget); with 2,000
/// bots on a saturated 2-core host the event queue then reached its
/// three-quarter mark and dropped inputs (about 1–2% in a 60 s run, each a
/// round trip ~100 ms longer); draining a batch per wake, none.
const EVENTS_PER_WAKE: usize = 1024;
/// Inputs for one scene that trigger a flush at once.
const MAX_INPUT_BATCH: usize = 4096;

/// Inputs waiting, by scene server, then (scene, epoch).
type InputBatches = BTreeMap<String, BTreeMap<(String, Epoch), Vec<(u64, Input)>>>;

struct AgentLoop {
    config: GateServerConfig,
    gate: Arc<Gate>,
    stats: Arc<GateServerStats>,
    link_cfg: LinkConfig,
    inbox_tx: mpsc::Sender<Inbox>,
    coordinator: Option<LinkSender>,
    scenes: BTreeMap<String, SceneLink>,
    agents: BTreeMap<u64, Agent>,
    /// Clients to disconnect once their `Kicked` message had time to leave.
    kicks: Vec<(Instant, u64, u16)>,
    seq: u64,
    inputs: InputBatches,
}

impl AgentLoop {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<GateEvent>,
        mut inbox: mpsc::Receiver<Inbox>,
        stop: CancellationToken,
        coordinator: tokio::task::JoinHandle<Result<(), GateServerError>>,
    ) -> Result<(), GateServerError> {
        let mut beat =
            tokio::time::interval(Duration::from_millis(u64::from(self.config.heartbeat_ms)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(INPUT_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(coordinator);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = &mut coordinator => {
                    if let Ok(Err(e)) = r {
                        self.close_all().await;
                        return Err(e);
                    }
                    break;
                }
                e = events.recv() => match e {
                    Some(e) => {
                        self.on_gate_event(e);
                        // Drain what else is queued in this wake: `recv`
                        // spends tokio's cooperative budget (the task yields
                        // every 128 events and waits a whole run-queue round,
                        // tens of ms on a busy host), `try_recv` does not.
                        for _ in 1..EVENTS_PER_WAKE {
                            match events.try_recv() {
                                Ok(e) => self.on_gate_event(e),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                m = inbox.recv() => match m {
                    Some(m) => self.on_inbox(m),
                    None => break,
                },
                _ = beat.tick() => self.heartbeat(),
                _ = flush.tick(), if !self.inputs.is_empty() => self.flush_inputs(),
                _ = sweep.tick() => self.sweep(),
            }
        }
        self.close_all().await;
        Ok(())
    }

    async fn close_all(&mut self) {
        for &client in self.agents.keys() {
            if let Some(c) = &self.coordinator {
                let _ = c.try_send(&LinkMsg::CloseSession { session: client });
            }
        }
        self.agents.clear();
        self.gate.stop();
        // Let the CloseSession messages and the disconnects leave.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Sends the gathered inputs, one `Inputs` frame per scene.
    fn flush_inputs(&mut self) {
        for (server, scenes) in std::mem::take(&mut self.inputs) {
            for ((scene, epoch), inputs) in scenes {
                let n = inputs.len() as u64;
                let sent = match self.scenes.get(&server) {
                    Some(SceneLink::Up(s)) => s
                        .try_send(&LinkMsg::Inputs {
                            scene,
                            epoch,
                            inputs,
                        })
                        .is_ok(),
                    _ => false,
                };
                let c = if sent {
                    &self.stats.inputs
                } else {
                    &self.stats.inputs_dropped
                };
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn to_coordinator(&self, msg: &LinkMsg) {
        let ok = self
            .coordinator
            .as_ref()
            .is_some_and(|c| c.try_send(msg).is_ok());
        if !ok {
            bump(&self.stats.to_coordinator_dropped);
        }
    }

    fn tell(&self, client: u64, msg: &ServerMsg) {
        match self.gate.send(client, Channel::Reliable, msg.encode()) {
            // A client that has just gone: nothing to tell.
            Ok(()) | Err(GateSendError::UnknownClient) => {}
            Err(e) => {
                // The session cannot go on without it: disconnect the client
                // (it may log in again with its resume key).
                bump(&self.stats.told_dropped);
                warn!(
                    client,
                    "a reliable message to a client was lost ({e}); disconnecting it"
                );
                let _ = self.gate.disconnect(client, codes::UNAVAILABLE);
            }
        }
    }

    fn kick(&mut self, client: u64, reason: &str, code: u16) {
        self.tell(
            client,
            &ServerMsg::Kicked {
                reason: reason.to_owned(),
            },
        );
        self.kicks
            .push((Instant::now() + Duration::from_millis(200), client, code));
    }

    fn heartbeat(&mut self) {
        self.seq += 1;
        let hb = Heartbeat {
            seq: self.seq,
            scenes: Vec::new(),
            online: u32::try_from(self.gate.connected()).unwrap_or(u32::MAX),
            addrs: self
                .gate
                .open_addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        if let Some(c) = &self.coordinator {
            let _ = c.try_send(&LinkMsg::Heartbeat(hb));
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let open = Duration::from_millis(self.config.open_timeout_ms);
        let mut late: Vec<(u64, &'static str)> = Vec::new();
        for (&c, a) in &self.agents {
            if a.phase == Phase::Opening && now.duration_since(a.connected_at) > open {
                late.push((c, "session not opened in time"));
            } else if now.duration_since(a.last_heard) > idle {
                late.push((c, "idle"));
            }
        }
        for (c, why) in late {
            bump(&self.stats.idle_kicks);
            self.agents.remove(&c);
            self.to_coordinator(&LinkMsg::CloseSession { session: c });
            self.kick(c, why, codes::IDLE);
        }
        let due: Vec<(u64, u16)> = self
            .kicks
            .iter()
            .filter(|(t, _, _)| *t <= now)
            .map(|(_, c, code)| (*c, *code))
            .collect();
        self.kicks.retain(|(t, _, _)| *t > now);
        for (c, code) in due {
            let _ = self.gate.disconnect(c, code);
        }
    }

    fn on_gate_event(&mut self, e: GateEvent) {
        match e {
            GateEvent::Connected { client, claims, .. } => {
                bump(&self.stats.clients);
                if self.coordinator.is_none() {
                    let _ = self.gate.disconnect(client, codes::UNAVAILABLE);
                    return;
                }
                let now = Instant::now();
                self.agents.insert(
                    client,
                    Agent {
                        account: claims.account,
                        avatar: None,
                        phase: Phase::Opening,
                        connected_at: now,
                        last_heard: now,
                        route: None,
                    },
                );
                self.to_coordinator(&LinkMsg::OpenSession {
                    request: client,
                    account: claims.account,
                    client,
                    nonce: claims.nonce,
                });
            }
            GateEvent::Message {
                client, payload, ..
            } => self.on_client(client, &payload),
            GateEvent::Disconnected { client, reason } => {
                if self.agents.remove(&client).is_some() {
                    self.to_coordinator(&LinkMsg::CloseSession { session: client });
                }
                if !matches!(
                    reason,
                    DisconnectReason::ByClient | DisconnectReason::Kicked(_)
                ) {
                    debug!(client, ?reason, "client dropped");
                }
            }
        }
    }

    fn on_client(&mut self, client: u64, payload: &[u8]) {
        let Some(agent) = self.agents.get_mut(&client) else {
            return;
        };
        agent.last_heard = Instant::now();
        let msg = match ClientMsg::decode(payload) {
            Ok(m) => m,
            Err(_) => {
                bump(&self.stats.malformed);
                self.agents.remove(&client);
                self.to_coordinator(&LinkMsg::CloseSession { session: client });
                return self.kick(client, "malformed message", codes::PROTOCOL);
            }
        };
        if agent.phase == Phase::Opening {
            return self.tell(
                client,
                &ServerMsg::Error {
                    code: "not_ready".into(),
                    text: "the session is being opened".into(),
                },
            );
        }
        match msg {
            ClientMsg::Input(input) => {
                let Some(route) = &agent.route else {
                    bump(&self.stats.inputs_dropped);
                    return;
                };
                // Gathered per scene server and sent as one `Inputs` frame
                // every INPUT_FLUSH (or sooner when many are waiting).
                let batch = self
                    .inputs
                    .entry(route.server.clone())
                    .or_default()
                    .entry((route.scene.clone(), route.epoch))
                    .or_default();
                batch.push((client, input));
                if batch.len() >= MAX_INPUT_BATCH {
                    self.flush_inputs();
                }
            }
            ClientMsg::ListAvatars => {
                self.to_coordinator(&LinkMsg::ListAvatars { session: client })
            }
            ClientMsg::CreateAvatar { name } => {
                self.to_coordinator(&LinkMsg::CreateAvatar {
                    session: client,
                    name,
                });
            }
            ClientMsg::Select { avatar } => self.to_coordinator(&LinkMsg::AttachAvatar {
                session: client,
                avatar,
            }),
            ClientMsg::Chat { to, text } => self.to_coordinator(&LinkMsg::Chat {
                session: client,
                to,
                text,
            }),
            ClientMsg::Leave => self.to_coordinator(&LinkMsg::DetachAvatar { session: client }),
        }
    }

    fn on_inbox(&mut self, m: Inbox) {
        match m {
            Inbox::CoordinatorUp(s) => {
                info!("linked to the coordinator");
                self.coordinator = Some(s);
                self.heartbeat();
                // After a link loss (or a coordinator restart) the sessions
                // are replayed: reopened (a zero nonce: no token involved)
                // and their avatars attached again where they are.
                let replay: Vec<(u64, u64, Option<u64>)> = self
                    .agents
                    .iter()
                    .filter(|(_, a)| a.phase == Phase::Open)
                    .map(|(&c, a)| (c, a.account, a.avatar))
                    .collect();
                for (client, account, avatar) in replay {
                    self.to_coordinator(&LinkMsg::OpenSession {
                        request: 0,
                        account,
                        client,
                        nonce: [0; 16],
                    });
                    if let Some(avatar) = avatar {
                        self.to_coordinator(&LinkMsg::AttachAvatar {
                            session: client,
                            avatar,
                        });
                    }
                }
            }
            Inbox::CoordinatorDown => self.coordinator = None,
            Inbox::SceneUp(server, s) => {
                self.scenes.insert(server, SceneLink::Up(s));
            }
            Inbox::SceneDown(server) => {
                self.scenes.remove(&server);
            }
            Inbox::Coordinator(msg) => self.on_coordinator(msg),
        }
    }

    fn ensure_scene_link(&mut self, server: &str, addr: &str) {
        if self.scenes.contains_key(server) {
            return;
        }
        self.scenes.insert(server.to_owned(), SceneLink::Connecting);
        tokio::spawn(scene_task(
            server.to_owned(),
            addr.to_owned(),
            self.link_cfg.clone(),
            Arc::clone(&self.gate),
            Arc::clone(&self.stats),
            self.inbox_tx.clone(),
            CancellationToken::new(),
        ));
    }

    fn on_coordinator(&mut self, msg: LinkMsg) {
        match msg {
            LinkMsg::Session { session, event } => self.on_session(session, event),
            LinkMsg::ChatTo {
                sessions,
                from,
                scope,
                text,
            } => {
                let m = ServerMsg::Chat { from, scope, text };
                let bytes = m.encode();
                for s in sessions {
                    if self.agents.contains_key(&s)
                        && self.gate.send(s, Channel::Reliable, bytes.clone()).is_ok()
                    {
                        bump(&self.stats.chat_delivered);
                    }
                }
            }
            LinkMsg::Registered { .. } => {}
            LinkMsg::Refused { reason } => warn!(%reason, "the coordinator refused a message"),
            other => debug!(
                kind = other.kind(),
                "unexpected message from the coordinator"
            ),
        }
    }

    fn on_session(&mut self, session: u64, event: SessionEvent) {
        let Some(agent) = self.agents.get_mut(&session) else {
            return;
        };
        match event {
            SessionEvent::Opened { request: 0, .. } if agent.phase == Phase::Open => {
                debug!(session, "session replayed");
            }
            SessionEvent::Opened { account, .. } => {
                agent.phase = Phase::Open;
                bump(&self.stats.sessions_opened);
                self.tell(session, &ServerMsg::Welcome { account, session });
                self.to_coordinator(&LinkMsg::ListAvatars { session });
            }
            SessionEvent::Refused { reason, .. } if agent.phase == Phase::Opening => {
                bump(&self.stats.sessions_refused);
                self.agents.remove(&session);
                self.kick(session, &reason, codes::KICKED);
            }
            SessionEvent::Refused { reason, .. } => self.tell(
                session,
                &ServerMsg::Error {
                    code: "refused".into(),
                    text: reason,
                },
            ),
            SessionEvent::Avatars(list) => self.tell(session, &ServerMsg::Avatars(list)),
            SessionEvent::Routed {
                scene,
                epoch,
                server,
                addr,
                ..
            } => {
                agent.route = Some(Route {
                    scene,
                    epoch,
                    server: server.clone(),
                });
                self.ensure_scene_link(&server, &addr);
            }
            SessionEvent::Attached {
                avatar,
                scene,
                net_id,
            } => {
                agent.avatar = Some(avatar);
                self.tell(
                    session,
                    &ServerMsg::Entered {
                        avatar,
                        scene,
                        net_id,
                    },
                );
            }
            SessionEvent::Detached { avatar, .. } => {
                agent.route = None;
                agent.avatar = None;
                self.tell(session, &ServerMsg::Left { avatar });
            }
            SessionEvent::Transferring { scene, .. } => {
                self.tell(session, &ServerMsg::Moving { scene });
            }
            SessionEvent::Kicked { reason } => {
                bump(&self.stats.cluster_kicks);
                self.agents.remove(&session);
                self.kick(session, &reason, codes::KICKED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet for a client no listener has is counted as unrouted, not
    /// as dropped for a full queue.
    #[tokio::test]
    async fn a_packet_for_a_gone_client_is_counted_unrouted() {
        let config = GateConfig::new(1, [7u8; 32]);
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (gate, _events) = Gate::bind(config, &[addr], Arc::new(AdmitAll))
            .await
            .expect("gate binds");
        let stats = GateServerStats::default();
        forward_packet(&gate, &stats, 42, vec![1, 2, 3]);
        let s = stats.snapshot();
        assert_eq!(
            (s.packets, s.packets_unrouted, s.packets_dropped),
            (0, 1, 0)
        );
        tokio::time::timeout(Duration::from_secs(10), gate.shutdown())
            .await
            .expect("gate stops");
    }
}
