//! The registry: scene servers and gates by name, their liveness, and the
//! claims scene servers make in their registrations and heartbeats.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use tessera_wire::{Epoch, Placement, SceneLoad};

use crate::{ClusterState, Effect, SessionId};

/// A registered node (scene server or gate). Stable for a node name within
/// one [`ClusterState`]; not stable across coordinator restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Hosts scenes.
    SceneServer,
    /// Bridges client sessions; never hosts scenes.
    Gate,
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
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) kind: NodeKind,
    pub(crate) alive: bool,
    pub(crate) last_seen: u64,
    /// Maximum number of scenes (0 = no limit).
    pub(crate) capacity: u32,
    /// Scenes placed here (the reverse of `SceneEntry::placement`).
    pub(crate) scenes: BTreeSet<String>,
    /// An operator is emptying it: nothing is placed here, and its scenes
    /// move elsewhere one at a time.
    pub(crate) draining: bool,
    /// It registered and may take scenes over from busier servers (see
    /// `balance.rs`); cleared once none is two scenes ahead of it.
    pub(crate) filling: bool,
    /// The game it runs, as it registered (empty for gates).
    pub(crate) game: String,
}

impl Node {
    /// Whether a scene may be placed or moved here: a live scene server,
    /// not draining, below its capacity.
    pub(crate) fn can_take(&self) -> bool {
        self.alive
            && self.kind == NodeKind::SceneServer
            && !self.draining
            && (self.capacity == 0 || self.scenes.len() < self.capacity as usize)
    }
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
    /// An operator is emptying it (`drain`).
    pub draining: bool,
}

impl ClusterState {
    /// A node (re-)registers under `name` — the first message on every new
    /// link. A scene server passes the placements it still hosts or is
    /// loading (non-empty after a coordinator restart or a reconnect); each
    /// is claimed (see the crate docs), placements the state had on this
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
        self.check_registration(name, kind, hosted)?;
        self.advance(now);
        let mut out = Vec::new();
        let id = self.node_named(name, kind);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.addr = addr.to_owned();
            node.capacity = capacity;
            node.alive = true;
            node.last_seen = self.now;
            node.filling = kind == NodeKind::SceneServer;
        }
        for p in hosted {
            self.claim(id, &p.scene, p.epoch, &mut out);
        }
        // Placements the node did not report are gone from it (a restarted
        // process): re-place them with a fresh epoch. In case a load of one
        // is still under way somewhere in the node, it is told to drop it.
        let lost = self.unreported_placements(id, hosted);
        self.give_up(id, lost, &mut out);
        // A new link: whatever was sent on the old one may be lost.
        let kept: Vec<String> = self.nodes[&id].scenes.iter().cloned().collect();
        for scene in kept {
            self.push_sync(&scene, &mut out);
        }
        self.sweep(&mut out);
        Ok((id, out))
    }

    /// Refuses a registration that cannot be accepted.
    fn check_registration(
        &self,
        name: &str,
        kind: NodeKind,
        hosted: &[Placement],
    ) -> Result<(), RegisterError> {
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
        Ok(())
    }

    /// The id of the node called `name`, created (not alive yet) if new.
    fn node_named(&mut self, name: &str, kind: NodeKind) -> NodeId {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
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
                last_seen: self.now,
                capacity: 0,
                scenes: BTreeSet::new(),
                draining: false,
                filling: false,
                game: String::new(),
            },
        );
        id
    }

    /// Records the game `node` runs (from its registration), for the status.
    pub fn set_game(&mut self, node: NodeId, game: &str) {
        if let Some(n) = self.nodes.get_mut(&node) {
            game.clone_into(&mut n.game);
        }
    }

    /// The placements the state has on `node` that `hosted` does not list.
    fn unreported_placements(&self, node: NodeId, hosted: &[Placement]) -> Vec<(String, Epoch)> {
        let kept: BTreeSet<(&str, Epoch)> =
            hosted.iter().map(|p| (p.scene.as_str(), p.epoch)).collect();
        self.nodes[&node]
            .scenes
            .iter()
            .filter_map(|scene| {
                let (_, epoch) = self.scenes[scene].placement?;
                (!kept.contains(&(scene.as_str(), epoch))).then(|| (scene.clone(), epoch))
            })
            .collect()
    }

    /// A heartbeat from `node` with the load of every scene it hosts **or is
    /// loading**. Each reported scene is a claim (see the crate docs). A node
    /// declared dead comes back to life (e.g. after SIGCONT); stale claims are
    /// answered with [`Effect::DropScene`]. A placement older than
    /// `heartbeat_timeout_ms` that the heartbeat does not list is given up
    /// ([`DropReason::NotReported`](crate::DropReason::NotReported)) and
    /// placed again.
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
            self.take_loads(node, loads, &mut out);
            let missing = self.missing_placements(node, loads);
            self.give_up(node, missing, &mut out);
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// Each scene a heartbeat lists is a claim; the current placement's
    /// load is recorded.
    fn take_loads(&mut self, node: NodeId, loads: &[SceneLoad], out: &mut Vec<Effect>) {
        for load in loads {
            if self.claim(node, &load.scene, load.epoch, out) {
                self.push_sync(&load.scene, out);
            }
            if let Some(s) = self.scenes.get_mut(&load.scene)
                && s.placement == Some((node, load.epoch))
            {
                s.population = load.population;
                s.tick_p99_us = load.tick_p99_us;
            }
        }
    }

    /// Placements on `node` older than the heartbeat timeout that its
    /// heartbeat does not list. A scene moving away is not missing: its
    /// host dropped it on purpose and says so with `scene_released`.
    fn missing_placements(&self, node: NodeId, loads: &[SceneLoad]) -> Vec<(String, Epoch)> {
        let reported: BTreeSet<&str> = loads.iter().map(|l| l.scene.as_str()).collect();
        let timeout = self.config.heartbeat_timeout_ms;
        self.nodes[&node]
            .scenes
            .iter()
            .filter(|scene| !reported.contains(scene.as_str()))
            .filter_map(|scene| {
                let s = &self.scenes[scene];
                if s.moving.is_some() {
                    return None;
                }
                let (_, epoch) = s.placement?;
                (self.now.saturating_sub(s.placed_at) > timeout).then(|| (scene.clone(), epoch))
            })
            .collect()
    }

    /// `node` reports `scene` loaded and ticking under `epoch`. Like every
    /// message from a node it proves the node alive; the report is a claim
    /// (see the crate docs), so a stale one is answered with a drop.
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

    pub fn node(&self, id: NodeId) -> Option<NodeView> {
        self.nodes.get(&id).map(|n| NodeView {
            id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            kind: n.kind,
            alive: n.alive,
            last_seen: n.last_seen,
            scenes: n.scenes.iter().cloned().collect(),
            draining: n.draining,
        })
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// Every registered node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView> + '_ {
        self.nodes.keys().filter_map(|&id| self.node(id))
    }

    /// `node` was heard from: it is alive (again) as of now.
    pub(crate) fn seen(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.alive = true;
            n.last_seen = self.now;
        }
    }

    /// A message from `node` arrived at `at` (before `now`): a live node is
    /// not silent since then, whenever the message is handled. Lets the
    /// coordinator stamp heartbeats on arrival, so one waiting behind a busy
    /// lock or queue still counts. Never revives a dead node (its next
    /// heartbeat does), and never expires anything.
    pub fn heard(&mut self, node: NodeId, at: u64) {
        let at = at.min(self.now);
        if let Some(n) = self.nodes.get_mut(&node)
            && n.alive
        {
            n.last_seen = n.last_seen.max(at);
        }
    }

    /// The coordinator could not listen for the last `ms` before `now` (its
    /// process was stopped, its lock held, its runtime starved): no live
    /// node is held to that time, so a coordinator's stall never expires a
    /// healthy node. Call it before anything that sweeps at `now`; a node
    /// that really died meanwhile still expires a heartbeat timeout later.
    pub fn stalled(&mut self, now: u64, ms: u64) {
        self.advance(now);
        let now = self.now;
        for n in self.nodes.values_mut().filter(|n| n.alive) {
            n.last_seen = n.last_seen.saturating_add(ms).min(now);
        }
    }

    /// Nodes silent for longer than the heartbeat timeout die: they host
    /// nothing, their sessions end, and their links are to be closed.
    pub(crate) fn expire_silent(&mut self, out: &mut Vec<Effect>) {
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
    }

    /// `id` is dead or gone: it hosts nothing and its sessions end.
    pub(crate) fn node_lost(&mut self, id: NodeId, out: &mut Vec<Effect>) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.alive = false;
        let scenes = std::mem::take(&mut node.scenes);
        for scene in scenes {
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.placement = None;
                s.ready = false;
                s.moving = None;
            }
            self.abort_transfers_from(&scene, out);
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

    /// The registry's invariants: names and nodes agree; a dead node or a
    /// gate hosts nothing; every scene a node lists is placed on it.
    pub(crate) fn check_registry_invariants(&self) -> Result<(), String> {
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
        Ok(())
    }
}
