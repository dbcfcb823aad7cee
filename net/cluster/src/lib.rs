//! The coordinator's **pure cluster state machine**: the registry of scene
//! servers and gates, the scene catalog and its placement, and the avatar
//! directory with single sign-on.
//!
//! No sockets, no tokio, no threads, no clock: the networked coordinator feeds
//! [`ClusterState`] what it hears (registrations, heartbeats, scene events,
//! logins, attach requests) together with the current time in milliseconds,
//! and carries out the [`Effect`]s every mutating method returns, **in
//! order**. The same inputs always give the same state and the same effects,
//! so every failure scenario of the design (a server killed, paused and
//! resumed, a coordinator restart) is a plain unit test here.
//!
//! # What it owns
//!
//! * **Registry** ([`ClusterState::register`], [`ClusterState::heartbeat`],
//!   [`ClusterState::deregister`]): nodes by name, each a scene server or a
//!   gate, with an id ([`NodeId`]) that stays the same when the same name
//!   registers again. A node is dead once `heartbeat_timeout_ms` passes
//!   without a heartbeat; a dead node stays listed (not alive) until it
//!   heartbeats again or registers again.
//! * **Placement**: every catalog scene is placed on the least-loaded live
//!   scene server (total reported population, then fewest scenes, then name,
//!   then id) and stays there while that server lives. Each placement carries
//!   an [`Epoch`] that strictly increases per scene.
//! * **Claims**: a scene server tells the state which `(scene, epoch)` it
//!   hosts, on register and in every heartbeat. A claim of the current
//!   placement is fine; a claim older than the scene's latest epoch is
//!   refused with [`Effect::DropScene`] (stale: drop without writing); a claim
//!   of the latest epoch of an unplaced scene, or of a newer epoch than the
//!   state knows, is adopted (this is how placement is rebuilt after a
//!   coordinator restart).
//! * **Avatar directory** (see [below](self#avatar-directory)).
//!
//! # Contract with the networked coordinator
//!
//! * A node is identified by its **name**. Every new link starts with
//!   [`ClusterState::register`]; the networked layer maps the link to the
//!   [`NodeId`] it returned and refuses a second live link under a name
//!   already connected (two processes sharing a name would share an
//!   identity). On [`Effect::NodeDown`] it closes the node's link.
//! * **Any** message from a node ([`heartbeat`](ClusterState::heartbeat),
//!   [`scene_ready`](ClusterState::scene_ready)) proves it alive, even after
//!   it was declared dead. [`UnknownNode`] means "register again" (it was
//!   deregistered, or the coordinator restarted).
//! * Call [`ClusterState::tick`] periodically (e.g. every 100 ms) so silent
//!   nodes expire even when nothing else happens.
//! * A heartbeat lists every scene the server hosts **or is loading**
//!   (population 0 while loading): it is the server's full claim.
//! * Effects are instructions, not facts: a [`Effect::PlaceScene`] may be
//!   lost with its link, or the load may fail. The server's claims reconcile:
//!   a placement missing from a register, or from a heartbeat once it is
//!   older than `heartbeat_timeout_ms`, is given up and placed again under a
//!   fresh epoch. Likewise attaches and detaches lost with a link are
//!   reconciled by [`Effect::SyncAttached`] when the server registers again.
//! * After a coordinator restart, gates replay [`ClusterState::login`] and
//!   [`ClusterState::attach`] for their live sessions within
//!   `restart_grace_ms`; the resulting [`Effect::AttachAt`] reaches a host
//!   that may already have the avatar attached for that session, which must
//!   treat it as a no-op. When the grace period ends, every placed scene
//!   gets one [`Effect::SyncAttached`] with the rebuilt directory.
//! * If a scene's host changes during a transfer, the source's detach
//!   report may never come: complete the transfer anyway (the portal's
//!   target position does not depend on the source's last save) or abort it
//!   (the avatar is attached at the source's new host, loaded from the last
//!   flush).
//!
//! # Epochs and coordinator restarts
//!
//! Epochs are per scene. Whenever a scene's latest epoch changes the state
//! emits [`Effect::PersistEpoch`] *before* the matching
//! [`Effect::PlaceScene`]: the networked coordinator must store it durably
//! (redb) before it sends anything carrying that epoch. After a restart it
//! builds the state with [`ClusterState::recover`], passing those stored
//! epochs: new placements then never reuse an epoch, and a paused server that
//! held an old epoch cannot win its scene back. `recover` also holds new
//! placements back for `restart_grace_ms`, so the servers that still host
//! their scenes can re-register and keep them instead of having them placed
//! elsewhere first.
//!
//! # Avatar directory
//!
//! An avatar always belongs to exactly one scene (the design's "the position
//! belongs to the scene"); it is [`AvatarPresence::Offline`] there (detached),
//! [`AvatarPresence::Online`] (attached for a session), or
//! [`AvatarPresence::Transferring`] (a portal: detached from its scene, whose
//! host is saving it, on its way to another scene). A transfer is three
//! explicit steps — [`ClusterState::begin_transfer`] (detach at the source),
//! [`ClusterState::complete_transfer`] (once the source reported the detach
//! and its state is saved: the avatar's scene changes, persisted by
//! [`Effect::PersistAvatarScene`], then attach at the target) or
//! [`ClusterState::abort_transfer`] — so a crash at any point leaves the
//! avatar in exactly one scene: the source until the commit, the target after.
//!
//! Single sign-on: one session per account. A second [`ClusterState::login`]
//! of the same account ends the old session (its avatar is detached) and
//! returns [`Effect::Kick`] for it. An attach is refused while the avatar is
//! online for another session; the same session attaching the same avatar
//! again is a **reconnect** and re-sends the attach (hosts treat an attach of
//! an avatar already attached for the same session as a no-op).
//!
//! When a scene fails over, its avatars stay in it; the online ones are
//! attached again at the new host with [`Effect::AttachAt`], which loads them
//! from the last flush. While a scene is unplaced, attaches are accepted and
//! their [`Effect::AttachAt`] is sent when the scene is placed.
//!
//! # Invariants
//!
//! [`ClusterState::check_invariants`] checks the ones about a single state;
//! the property test (`proptests.rs`) calls it after every step and checks
//! the ones about histories (epochs never going back, across restarts too;
//! no avatar lost or duplicated; hosts attached exactly as the directory
//! says) against a model.
//!
//! **Invariant:** a placed scene's server is registered, alive, a scene
//! server, and lists the scene; a dead node hosts nothing. So a scene is never
//! listed on two servers, let alone two live ones.
//!
//! **Invariant:** a scene's epoch never decreases and a new placement always
//! gets a fresh epoch above every epoch the scene had, so no scene is ever
//! hosted by two servers at the same epoch.
//!
//! **Invariant:** every avatar is in exactly one catalog scene, and the
//! per-scene index agrees with it.
//!
//! **Invariant:** a session has at most one avatar attached or in transfer,
//! that avatar names the session back, and an account has at most one
//! session.
//!
//! **Invariant:** nothing here reads a clock, spawns, or does I/O; maps are
//! `BTreeMap`s, so effects come out in a deterministic order.

mod avatars;
mod status;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tessera_sim::protocol::AvatarId;
use thiserror::Error;

use tessera_wire::{Epoch, Placement, SceneLoad};

pub use avatars::{
    AddAvatarError, AttachError, AvatarPresence, AvatarView, DetachError, LoginError, TransferError,
};
pub use status::{ClusterStatus, GateRow, SceneRow, ServerRow};

/// A registered node (scene server or gate). Stable for a node name within
/// one [`ClusterState`]; not stable across coordinator restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// A client session, as issued by login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// An account, as the data service names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u64);

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Hosts scenes.
    SceneServer,
    /// Bridges client sessions; never hosts scenes.
    Gate,
}

/// Tunables of the cluster state. Every field has a default; it
/// deserializes from the coordinator's section of `tessera.toml` (unknown
/// keys are an error); check it with [`validate`](Self::validate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// A node without a heartbeat for this long is dead. Default 3000 ms.
    pub heartbeat_timeout_ms: u64,
    /// A scene with at least this population is `busy`. Default 1500.
    pub busy_population: u32,
    /// A scene with at least this population is `full`: new attaches and
    /// transfers into it are refused (reconnects are not). Default 4000 (a
    /// 1000 × 1000 scene ticks 10,000 observers within budget).
    pub full_population: u32,
    /// After [`ClusterState::recover`], how long new placements wait for
    /// servers to re-register and keep their scenes. Default 3000 ms.
    pub restart_grace_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout_ms: 3000,
            busy_population: 1500,
            full_population: 4000,
            restart_grace_ms: 3000,
        }
    }
}

/// A [`ClusterConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterConfigError {
    #[error("heartbeat_timeout_ms must be greater than 0")]
    ZeroHeartbeatTimeout,
    #[error("full_population must be greater than 0")]
    ZeroFull,
    #[error("busy_population ({busy}) must not exceed full_population ({full})")]
    BusyAboveFull { busy: u32, full: u32 },
}

impl ClusterConfig {
    /// Checks the settings, with a message naming the field.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.heartbeat_timeout_ms == 0 {
            return Err(ClusterConfigError::ZeroHeartbeatTimeout);
        }
        if self.full_population == 0 {
            return Err(ClusterConfigError::ZeroFull);
        }
        if self.busy_population > self.full_population {
            return Err(ClusterConfigError::BusyAboveFull {
                busy: self.busy_population,
                full: self.full_population,
            });
        }
        Ok(())
    }

    /// The status of a scene with `population` avatars.
    pub fn status_of(&self, population: u32) -> SceneStatus {
        if population >= self.full_population {
            SceneStatus::Full
        } else if population >= self.busy_population {
            SceneStatus::Busy
        } else {
            SceneStatus::Open
        }
    }
}

/// How crowded a scene is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SceneStatus {
    Open,
    Busy,
    Full,
}

/// Why a server must drop a scene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The scene's placement is at `current` now; the server's epoch is older
    /// (or conflicts). Drop **without writing** its state
    /// ([`LinkMsg::EpochStale`](tessera_wire::LinkMsg::EpochStale)).
    Stale { current: Epoch },
    /// The scene is not in the catalog.
    UnknownScene,
    /// The server's heartbeats stopped listing this placement (e.g. the
    /// [`Effect::PlaceScene`] was lost, or loading failed): it is given up
    /// and placed again under a fresh epoch.
    NotReported,
}

/// Why a session is kicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// The same account logged in again; the newer session wins.
    DuplicateLogin,
}

/// An instruction for the networked layer. Carry them out in the order
/// returned: `Persist*` effects must be durable before the effects after them
/// are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store `scene`'s latest epoch durably (it is needed by
    /// [`ClusterState::recover`]) before sending anything carrying it.
    PersistEpoch { scene: String, epoch: Epoch },
    /// Tell `server` to host `scene` under `epoch`, loading its last flush.
    PlaceScene {
        server: NodeId,
        scene: String,
        epoch: Epoch,
    },
    /// Tell `server` to stop hosting `scene` at `epoch`.
    DropScene {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        reason: DropReason,
    },
    /// The node was declared dead (heartbeat timeout): close its link.
    NodeDown { node: NodeId },
    /// Store that `avatar` now belongs to `scene` (a committed transfer).
    PersistAvatarScene { avatar: AvatarId, scene: String },
    /// Attach `avatar` for `session` in `scene` at `server`, placement `epoch`.
    /// Idempotent at the host: an avatar already attached for `session` stays
    /// as it is; one attached for another session is re-bound to `session`.
    AttachAt {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        avatar: AvatarId,
        session: SessionId,
    },
    /// Detach `avatar` (of `session`) from `scene` at `server`: the host saves
    /// its state and keeps it in the scene as offline.
    DetachAt {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        avatar: AvatarId,
        session: SessionId,
    },
    /// `server` holds `scene` at `epoch` from before (it registered again,
    /// or got the scene back) and may have missed attaches and detaches: it
    /// must have exactly `attached` attached there — detach (saving) any
    /// other avatar, attach the missing ones.
    SyncAttached {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        attached: Vec<(AvatarId, SessionId)>,
    },
    /// End `session` at its gate.
    Kick {
        session: SessionId,
        reason: KickReason,
    },
}

/// A registration that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterError {
    #[error("node name must not be empty")]
    EmptyName,
    #[error("node {name:?} is registered as a different kind")]
    KindMismatch { name: String },
    #[error("a gate cannot host scenes")]
    GateWithScenes,
}

/// The node id is not (or no longer) registered: the node must register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{0} is not registered")]
pub struct UnknownNode(pub NodeId);

#[derive(Debug, Clone)]
struct Node {
    name: String,
    addr: String,
    kind: NodeKind,
    alive: bool,
    last_seen: u64,
    /// Maximum number of scenes (0 = no limit).
    capacity: u32,
    /// Scenes placed here (the reverse of [`SceneEntry::placement`]).
    scenes: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
struct SceneEntry {
    /// Hosting server and epoch, `None` when unplaced.
    placement: Option<(NodeId, Epoch)>,
    /// The highest epoch this scene ever had (issued, adopted or recovered).
    latest: Epoch,
    /// The host reported the scene loaded at the current epoch.
    ready: bool,
    /// When the current placement was made (or adopted).
    placed_at: u64,
    /// Last reported population (kept across failover as a load estimate).
    population: u32,
    tick_p99_us: u32,
    /// Avatars that belong to this scene.
    avatars: BTreeSet<AvatarId>,
}

/// The coordinator's cluster state. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClusterState {
    config: ClusterConfig,
    now: u64,
    /// No new placements before this time (restart grace).
    hold_until: u64,
    /// Recovering after a restart: the directory is not authoritative until
    /// the grace period ends, so [`Effect::SyncAttached`] waits until then.
    recovering: bool,
    nodes: BTreeMap<NodeId, Node>,
    names: BTreeMap<String, NodeId>,
    next_node: u32,
    scenes: BTreeMap<String, SceneEntry>,
    avatars: BTreeMap<AvatarId, avatars::Avatar>,
    sessions: BTreeMap<SessionId, avatars::Session>,
    accounts: BTreeMap<AccountId, SessionId>,
}

/// Read-only view of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub kind: NodeKind,
    pub alive: bool,
    pub last_seen: u64,
    pub scenes: Vec<String>,
}

/// Read-only view of one scene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneView {
    pub name: String,
    /// Hosting server and epoch, `None` when unplaced.
    pub placement: Option<(NodeId, Epoch)>,
    /// The scene's highest epoch so far.
    pub latest_epoch: Epoch,
    pub ready: bool,
    pub population: u32,
    pub tick_p99_us: u32,
    pub status: SceneStatus,
}

impl ClusterState {
    /// A fresh cluster (first start): no epochs known, no grace period.
    pub fn new(config: ClusterConfig, now: u64) -> Result<Self, ClusterConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            now,
            hold_until: now,
            recovering: false,
            nodes: BTreeMap::new(),
            names: BTreeMap::new(),
            next_node: 1,
            scenes: BTreeMap::new(),
            avatars: BTreeMap::new(),
            sessions: BTreeMap::new(),
            accounts: BTreeMap::new(),
        })
    }

    /// The state after a coordinator restart: `epochs` are the per-scene
    /// epochs stored from [`Effect::PersistEpoch`] (scenes in it join the
    /// catalog). New placements wait `restart_grace_ms` for servers to
    /// re-register with the scenes they still host.
    pub fn recover(
        config: ClusterConfig,
        epochs: impl IntoIterator<Item = (String, Epoch)>,
        now: u64,
    ) -> Result<Self, ClusterConfigError> {
        let grace = config.restart_grace_ms;
        let mut state = Self::new(config, now)?;
        state.hold_until = now.saturating_add(grace);
        state.recovering = true;
        for (scene, epoch) in epochs {
            let entry = state.scenes.entry(scene).or_default();
            entry.latest = entry.latest.max(epoch);
        }
        Ok(state)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The latest time the state has seen.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Still in the grace period after [`recover`](Self::recover): placements
    /// are held back and the directory is being rebuilt.
    pub fn recovering(&self) -> bool {
        self.recovering
    }

    // -----------------------------------------------------------------------
    // Catalog
    // -----------------------------------------------------------------------

    /// Adds `scene` to the catalog (idempotent) and places it if it can.
    pub fn add_scene(&mut self, now: u64, scene: &str) -> Vec<Effect> {
        self.advance(now);
        let mut out = Vec::new();
        self.scenes.entry(scene.to_owned()).or_default();
        self.sweep(&mut out);
        out
    }

    /// Scene names in the catalog, sorted.
    pub fn scene_names(&self) -> impl Iterator<Item = &str> {
        self.scenes.keys().map(String::as_str)
    }

    pub fn scene(&self, scene: &str) -> Option<SceneView> {
        self.scenes.get(scene).map(|s| SceneView {
            name: scene.to_owned(),
            placement: s.placement,
            latest_epoch: s.latest,
            ready: s.ready,
            population: s.population,
            tick_p99_us: s.tick_p99_us,
            status: self.config.status_of(s.population),
        })
    }

    /// Where `scene` is hosted now.
    pub fn placement(&self, scene: &str) -> Option<(NodeId, Epoch)> {
        self.scenes.get(scene).and_then(|s| s.placement)
    }

    /// Every scene's latest epoch (what [`Effect::PersistEpoch`] stored).
    pub fn epochs(&self) -> BTreeMap<String, Epoch> {
        self.scenes
            .iter()
            .map(|(name, s)| (name.clone(), s.latest))
            .collect()
    }

    // -----------------------------------------------------------------------
    // Registry
    // -----------------------------------------------------------------------

    /// A node (re-)registers under `name` — the first message on every new
    /// link. A scene server passes the placements it still hosts or is
    /// loading (non-empty after a coordinator restart or a reconnect); each
    /// is claimed (see the module docs), placements the state had on this
    /// node that it does not report are given up and placed again, and each
    /// kept placement gets an [`Effect::SyncAttached`] (the old link may have
    /// lost attaches and detaches).
    ///
    /// The same name gets the same [`NodeId`] back.
    pub fn register(
        &mut self,
        now: u64,
        name: &str,
        addr: &str,
        kind: NodeKind,
        capacity: u32,
        hosted: &[Placement],
    ) -> Result<(NodeId, Vec<Effect>), RegisterError> {
        if name.is_empty() {
            return Err(RegisterError::EmptyName);
        }
        if kind == NodeKind::Gate && !hosted.is_empty() {
            return Err(RegisterError::GateWithScenes);
        }
        if let Some(id) = self.names.get(name)
            && self.nodes[id].kind != kind
        {
            return Err(RegisterError::KindMismatch {
                name: name.to_owned(),
            });
        }
        self.advance(now);
        let mut out = Vec::new();
        let id = match self.names.get(name) {
            Some(&id) => id,
            None => {
                let id = NodeId(self.next_node);
                self.next_node += 1;
                self.names.insert(name.to_owned(), id);
                self.nodes.insert(
                    id,
                    Node {
                        name: name.to_owned(),
                        addr: String::new(),
                        kind,
                        alive: false,
                        last_seen: now,
                        capacity: 0,
                        scenes: BTreeSet::new(),
                    },
                );
                id
            }
        };
        {
            let node = self.nodes.get_mut(&id).expect("just ensured");
            node.addr = addr.to_owned();
            node.capacity = capacity;
            node.alive = true;
            node.last_seen = self.now;
        }
        for p in hosted {
            self.claim(id, &p.scene, p.epoch, &mut out);
        }
        // Placements the node did not report are gone from it (a restarted
        // process): re-place them with a fresh epoch.
        let kept: BTreeSet<(&str, Epoch)> =
            hosted.iter().map(|p| (p.scene.as_str(), p.epoch)).collect();
        let lost: Vec<(String, Epoch)> = self.nodes[&id]
            .scenes
            .iter()
            .filter_map(|scene| {
                let (_, epoch) = self.scenes[scene].placement?;
                (!kept.contains(&(scene.as_str(), epoch))).then(|| (scene.clone(), epoch))
            })
            .collect();
        // In case a load of it is still under way somewhere in the node.
        self.give_up(id, lost, &mut out);
        // A new link: whatever was sent on the old one may be lost.
        let kept: Vec<String> = self.nodes[&id].scenes.iter().cloned().collect();
        for scene in kept {
            self.push_sync(&scene, &mut out);
        }
        self.sweep(&mut out);
        Ok((id, out))
    }

    /// Gives up placements `node` does not report: unplaces each scene (the
    /// sweep places it again) and tells the node to drop it.
    fn give_up(&mut self, node: NodeId, scenes: Vec<(String, Epoch)>, out: &mut Vec<Effect>) {
        for (scene, epoch) in scenes {
            self.unplace(&scene);
            out.push(Effect::DropScene {
                server: node,
                scene,
                epoch,
                reason: DropReason::NotReported,
            });
        }
    }

    /// A heartbeat from `node` with the load of every scene it hosts **or is
    /// loading**. Each reported scene is a claim (see the module docs). A node
    /// declared dead comes back to life (e.g. after SIGCONT); stale claims are
    /// answered with [`Effect::DropScene`]. A placement older than
    /// `heartbeat_timeout_ms` that the heartbeat does not list is given up
    /// ([`DropReason::NotReported`]) and placed again.
    pub fn heartbeat(
        &mut self,
        now: u64,
        node: NodeId,
        loads: &[SceneLoad],
    ) -> Result<Vec<Effect>, UnknownNode> {
        if !self.nodes.contains_key(&node) {
            return Err(UnknownNode(node));
        }
        self.advance(now);
        let mut out = Vec::new();
        self.seen(node);
        if self.nodes[&node].kind == NodeKind::SceneServer {
            for load in loads {
                if self.claim(node, &load.scene, load.epoch, &mut out) {
                    self.push_sync(&load.scene, &mut out);
                }
                if let Some(s) = self.scenes.get_mut(&load.scene)
                    && s.placement == Some((node, load.epoch))
                {
                    s.population = load.population;
                    s.tick_p99_us = load.tick_p99_us;
                }
            }
            let reported: BTreeSet<&str> = loads.iter().map(|l| l.scene.as_str()).collect();
            let timeout = self.config.heartbeat_timeout_ms;
            let missing: Vec<(String, Epoch)> = self.nodes[&node]
                .scenes
                .iter()
                .filter(|scene| !reported.contains(scene.as_str()))
                .filter_map(|scene| {
                    let s = &self.scenes[scene];
                    let (_, epoch) = s.placement?;
                    (self.now.saturating_sub(s.placed_at) > timeout).then(|| (scene.clone(), epoch))
                })
                .collect();
            self.give_up(node, missing, &mut out);
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// `node` reports `scene` loaded and ticking under `epoch`. Like every
    /// message from a node it proves the node alive; the report is a claim
    /// (see the module docs), so a stale one is answered with a drop.
    pub fn scene_ready(
        &mut self,
        now: u64,
        node: NodeId,
        scene: &str,
        epoch: Epoch,
    ) -> Result<Vec<Effect>, UnknownNode> {
        if !self.nodes.contains_key(&node) {
            return Err(UnknownNode(node));
        }
        self.advance(now);
        let mut out = Vec::new();
        self.seen(node);
        if self.nodes[&node].kind == NodeKind::SceneServer {
            if self.claim(node, scene, epoch, &mut out) {
                self.push_sync(scene, &mut out);
            }
            if let Some(s) = self.scenes.get_mut(scene)
                && s.placement == Some((node, epoch))
            {
                s.ready = true;
            }
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// `node` leaves on purpose (after flushing): it is removed from the
    /// registry and its scenes are placed elsewhere with fresh epochs.
    pub fn deregister(&mut self, now: u64, node: NodeId) -> Result<Vec<Effect>, UnknownNode> {
        if !self.nodes.contains_key(&node) {
            return Err(UnknownNode(node));
        }
        self.advance(now);
        let mut out = Vec::new();
        self.node_lost(node, &mut out);
        if let Some(n) = self.nodes.remove(&node) {
            self.names.remove(&n.name);
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// Time passes: nodes past their heartbeat timeout die (their scenes are
    /// re-placed on survivors) and unplaced scenes are placed if they can be.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        self.advance(now);
        let mut out = Vec::new();
        self.sweep(&mut out);
        out
    }

    pub fn node(&self, id: NodeId) -> Option<NodeView> {
        self.nodes.get(&id).map(|n| NodeView {
            id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            kind: n.kind,
            alive: n.alive,
            last_seen: n.last_seen,
            scenes: n.scenes.iter().cloned().collect(),
        })
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// Every registered node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView> + '_ {
        self.nodes.keys().filter_map(|&id| self.node(id))
    }

    // -----------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------

    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// `node` was heard from: it is alive (again) as of now.
    fn seen(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.alive = true;
            n.last_seen = self.now;
        }
    }

    /// Expire silent nodes, then place what is unplaced.
    fn sweep(&mut self, out: &mut Vec<Effect>) {
        let timeout = self.config.heartbeat_timeout_ms;
        let expired: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive && self.now.saturating_sub(n.last_seen) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.node_lost(id, out);
            out.push(Effect::NodeDown { node: id });
        }
        if self.recovering && self.now >= self.hold_until {
            // The directory is rebuilt: every host learns what it must have
            // attached.
            self.recovering = false;
            let placed: Vec<String> = self
                .scenes
                .iter()
                .filter(|(_, s)| s.placement.is_some())
                .map(|(name, _)| name.clone())
                .collect();
            for scene in placed {
                self.push_sync(&scene, out);
            }
        }
        self.place_unplaced(out);
    }

    /// `id` is dead or gone: it hosts nothing and its sessions end.
    fn node_lost(&mut self, id: NodeId, out: &mut Vec<Effect>) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.alive = false;
        let scenes = std::mem::take(&mut node.scenes);
        for scene in scenes {
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.placement = None;
                s.ready = false;
            }
        }
        let sessions: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.gate == Some(id))
            .map(|(&sid, _)| sid)
            .collect();
        for sid in sessions {
            self.end_session(sid, out);
        }
    }

    /// Removes `scene`'s placement (its host no longer has it).
    fn unplace(&mut self, scene: &str) {
        let Some(s) = self.scenes.get_mut(scene) else {
            return;
        };
        if let Some((node, _)) = s.placement.take() {
            s.ready = false;
            if let Some(n) = self.nodes.get_mut(&node) {
                n.scenes.remove(scene);
            }
        }
    }

    /// The live scene server a new scene goes to, if any.
    fn pick_server(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.alive
                    && n.kind == NodeKind::SceneServer
                    && (n.capacity == 0 || n.scenes.len() < n.capacity as usize)
            })
            .map(|(&id, n)| {
                let load: u64 = n
                    .scenes
                    .iter()
                    .map(|s| u64::from(self.scenes[s].population))
                    .sum();
                ((load, n.scenes.len(), n.name.as_str(), id), id)
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, id)| id)
    }

    fn place_unplaced(&mut self, out: &mut Vec<Effect>) {
        if self.now < self.hold_until {
            return;
        }
        let pending: Vec<String> = self
            .scenes
            .iter()
            .filter(|(_, s)| s.placement.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for scene in pending {
            let Some(server) = self.pick_server() else {
                break;
            };
            let s = self.scenes.get_mut(&scene).expect("listed above");
            let epoch = s.latest + 1;
            s.latest = epoch;
            s.placement = Some((server, epoch));
            s.ready = false;
            s.placed_at = self.now;
            self.nodes
                .get_mut(&server)
                .expect("picked")
                .scenes
                .insert(scene.clone());
            out.push(Effect::PersistEpoch {
                scene: scene.clone(),
                epoch,
            });
            out.push(Effect::PlaceScene {
                server,
                scene: scene.clone(),
                epoch,
            });
            self.reattach_scene(&scene, out);
        }
    }

    /// `node` (alive, a scene server) says it hosts `scene` at `epoch`.
    /// Returns whether the claim was adopted (the placement changed to it);
    /// the caller then owes the node an [`Effect::SyncAttached`].
    fn claim(&mut self, node: NodeId, scene: &str, epoch: Epoch, out: &mut Vec<Effect>) -> bool {
        let Some(s) = self.scenes.get_mut(scene) else {
            out.push(Effect::DropScene {
                server: node,
                scene: scene.to_owned(),
                epoch,
                reason: DropReason::UnknownScene,
            });
            return false;
        };
        if s.placement == Some((node, epoch)) {
            return false;
        }
        let adopt = epoch > s.latest || (epoch == s.latest && epoch > 0 && s.placement.is_none());
        if !adopt {
            out.push(Effect::DropScene {
                server: node,
                scene: scene.to_owned(),
                epoch,
                reason: DropReason::Stale { current: s.latest },
            });
            return false;
        }
        let previous = s.placement.replace((node, epoch));
        let raised = epoch > s.latest;
        s.latest = epoch;
        s.ready = true;
        s.placed_at = self.now;
        if raised {
            out.push(Effect::PersistEpoch {
                scene: scene.to_owned(),
                epoch,
            });
        }
        if let Some((old, old_epoch)) = previous {
            if let Some(n) = self.nodes.get_mut(&old) {
                n.scenes.remove(scene);
            }
            out.push(Effect::DropScene {
                server: old,
                scene: scene.to_owned(),
                epoch: old_epoch,
                reason: DropReason::Stale { current: epoch },
            });
        }
        self.nodes
            .get_mut(&node)
            .expect("claimer is registered")
            .scenes
            .insert(scene.to_owned());
        true
    }

    /// Checks every invariant in the module docs; `Err` names the first
    /// broken one. Cheap enough for debug assertions and tests, not for every
    /// message in production (it walks the whole state).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, &id) in &self.names {
            match self.nodes.get(&id) {
                Some(n) if &n.name == name => {}
                _ => return Err(format!("name {name:?} maps to {id} which is not named so")),
            }
        }
        if self.names.len() != self.nodes.len() {
            return Err("names and nodes disagree".into());
        }
        for (id, n) in &self.nodes {
            if !n.alive && !n.scenes.is_empty() {
                return Err(format!("dead {id} lists scenes {:?}", n.scenes));
            }
            if n.kind == NodeKind::Gate && !n.scenes.is_empty() {
                return Err(format!("gate {id} lists scenes"));
            }
            for scene in &n.scenes {
                match self.scenes.get(scene).and_then(|s| s.placement) {
                    Some((host, _)) if host == *id => {}
                    other => {
                        return Err(format!(
                            "{id} lists {scene:?} but its placement is {other:?}"
                        ));
                    }
                }
            }
        }
        for (name, s) in &self.scenes {
            if let Some((host, epoch)) = s.placement {
                let Some(n) = self.nodes.get(&host) else {
                    return Err(format!("{name:?} placed on unknown {host}"));
                };
                if !n.alive || n.kind != NodeKind::SceneServer || !n.scenes.contains(name) {
                    return Err(format!("{name:?} placed on {host} which cannot host it"));
                }
                if epoch != s.latest || epoch == 0 {
                    return Err(format!(
                        "{name:?} placed at epoch {epoch}, latest {}",
                        s.latest
                    ));
                }
            }
            for a in &s.avatars {
                match self.avatars.get(a) {
                    Some(av) if &av.scene == name => {}
                    _ => return Err(format!("scene {name:?} indexes avatar {a} wrongly")),
                }
            }
        }
        self.check_avatar_invariants()
    }
}
