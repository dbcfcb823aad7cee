//! Planned moves of a scene between live scene servers: an operator's
//! [`ClusterState::move_scene`] and [`ClusterState::drain`], and the
//! hand-off of scenes to a server that joins.
//!
//! A move reuses failover's machinery, with the old host's help: the host
//! is told to drop the scene with a flush ([`DropReason::Move`]); once every
//! state it saved is durable it says so ([`ClusterState::scene_released`]),
//! and only then is the scene placed on the target under a fresh epoch, its
//! online avatars attached there. Players see a pause, not a disconnect.
//!
//! **Hand-off.** A scene server that registers is *filling*: while another
//! live server hosts at least two scenes more than it, the busiest one hands
//! it its least populated running scene. The gap of two is the hysteresis: a
//! move only ever narrows the gap between two servers, never reverses it, so
//! no scene goes back and forth; the balancer never moves scenes between
//! servers that did not join, so an operator's moves stay where they are put.
//!
//! **One move at a time**, across the cluster: nothing is planned while a
//! move is under way, during a restart's grace period, or for a scene that
//! is not running yet. A move whose release does not come within
//! [`MOVE_TIMEOUTS`] heartbeat timeouts is given up like a lost placement:
//! the scene is placed again, as in failover.

use thiserror::Error;

use tessera_wire::Epoch;

use crate::registry::Node;
use crate::{ClusterState, DropReason, Effect, NodeId, NodeKind, UnknownNode};

/// A move not released within this many heartbeat timeouts is given up.
pub const MOVE_TIMEOUTS: u64 = 4;

/// A planned move under way: the host was told to drop the scene at `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) to: NodeId,
    pub(crate) since: u64,
}

/// Why an operator's move was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoveError {
    #[error("no scene {0:?} in the catalog")]
    UnknownScene(String),
    #[error("no scene server named {0:?}")]
    UnknownServer(String),
    #[error("scene server {0:?} is not alive")]
    ServerDown(String),
    #[error("scene server {0:?} is draining")]
    Draining(String),
    #[error("scene server {0:?} already hosts as many scenes as its capacity")]
    Full(String),
    #[error("scene {0:?} is not placed and running yet")]
    NotRunning(String),
    #[error("scene {scene:?} is already on {server:?}")]
    AlreadyThere { scene: String, server: String },
    #[error("scene {0:?} is being moved; one move at a time, try again when it is placed")]
    Busy(String),
    #[error("the coordinator is recovering after a restart; try again in a few seconds")]
    Recovering,
}

/// Why a drain was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DrainError {
    #[error("no scene server named {0:?}")]
    UnknownServer(String),
}

impl ClusterState {
    /// An operator moves `scene` to the scene server named `to`: its host
    /// flushes and drops it, then it is placed on `to` (see the module docs).
    pub fn move_scene(
        &mut self,
        now: u64,
        scene: &str,
        to: &str,
    ) -> Result<Vec<Effect>, MoveError> {
        self.advance(now);
        let target = self.check_move(scene, to)?;
        let mut out = Vec::new();
        self.start_move(scene, target, &mut out);
        self.sweep(&mut out);
        Ok(out)
    }

    /// Refuses a move that cannot be made now; else the target's id.
    fn check_move(&self, scene: &str, to: &str) -> Result<NodeId, MoveError> {
        let s = self
            .scenes
            .get(scene)
            .ok_or_else(|| MoveError::UnknownScene(scene.to_owned()))?;
        let target = self
            .names
            .get(to)
            .copied()
            .filter(|id| self.nodes[id].kind == NodeKind::SceneServer)
            .ok_or_else(|| MoveError::UnknownServer(to.to_owned()))?;
        let n = &self.nodes[&target];
        if self.recovering || self.now < self.hold_until {
            return Err(MoveError::Recovering);
        }
        if let Some(busy) = self.scene_moving() {
            return Err(MoveError::Busy(busy.to_owned()));
        }
        let (host, _) = s
            .placement
            .filter(|_| s.ready)
            .ok_or_else(|| MoveError::NotRunning(scene.to_owned()))?;
        if host == target {
            return Err(MoveError::AlreadyThere {
                scene: scene.to_owned(),
                server: to.to_owned(),
            });
        }
        if !n.alive {
            return Err(MoveError::ServerDown(to.to_owned()));
        }
        if n.draining {
            return Err(MoveError::Draining(to.to_owned()));
        }
        if !n.can_take() {
            return Err(MoveError::Full(to.to_owned()));
        }
        Ok(target)
    }

    /// An operator starts (`on`) or stops draining the scene server named
    /// `server`: while draining, nothing is placed on it and its scenes move
    /// to the other live servers, one at a time. It stays draining until
    /// told otherwise or it deregisters.
    pub fn drain(&mut self, now: u64, server: &str, on: bool) -> Result<Vec<Effect>, DrainError> {
        let id = self
            .names
            .get(server)
            .copied()
            .filter(|id| self.nodes[id].kind == NodeKind::SceneServer)
            .ok_or_else(|| DrainError::UnknownServer(server.to_owned()))?;
        self.advance(now);
        let mut out = Vec::new();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.draining = on;
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// `node` dropped `scene`, placed there at `epoch`, and every state it
    /// saved is durable. If that scene was moving away from it, it is placed
    /// on the move's target now (or, if the target cannot take it any
    /// more, wherever placement puts it); otherwise nothing happens.
    pub fn scene_released(
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
        self.seen(node);
        let mut out = Vec::new();
        let moving = self
            .scenes
            .get(scene)
            .filter(|s| s.placement == Some((node, epoch)))
            .and_then(|s| s.moving.clone());
        if let Some(m) = moving {
            self.unplace(scene, &mut out);
            if self.nodes.get(&m.to).is_some_and(Node::can_take) {
                self.place_on(scene, m.to, &mut out);
            }
        }
        self.sweep(&mut out);
        Ok(out)
    }

    /// The scene a move is under way for, if any.
    pub fn scene_moving(&self) -> Option<&str> {
        self.scenes
            .iter()
            .find(|(_, s)| s.moving.is_some())
            .map(|(name, _)| name.as_str())
    }

    /// Tells `scene`'s host to drop it with a flush, for `to`.
    fn start_move(&mut self, scene: &str, to: NodeId, out: &mut Vec<Effect>) {
        let now = self.now;
        let Some(s) = self.scenes.get_mut(scene) else {
            return;
        };
        let Some((from, epoch)) = s.placement else {
            return;
        };
        s.moving = Some(Move { to, since: now });
        out.push(Effect::DropScene {
            server: from,
            scene: scene.to_owned(),
            epoch,
            reason: DropReason::Move { to },
        });
    }

    /// Gives up moves not released in time: the scene is placed again (the
    /// host is told to drop it, in case it never heard of the move).
    pub(crate) fn expire_moves(&mut self, out: &mut Vec<Effect>) {
        let limit = self
            .config
            .heartbeat_timeout_ms
            .saturating_mul(MOVE_TIMEOUTS);
        let late: Vec<(String, NodeId, Epoch)> = self
            .scenes
            .iter()
            .filter(|(_, s)| {
                s.moving
                    .as_ref()
                    .is_some_and(|m| self.now.saturating_sub(m.since) > limit)
            })
            .filter_map(|(name, s)| s.placement.map(|(host, e)| (name.clone(), host, e)))
            .collect();
        for (scene, host, epoch) in late {
            self.give_up(host, vec![(scene, epoch)], out);
        }
    }

    /// Starts the next planned move, if one is due and none is under way:
    /// first off a draining server, then to a filling one.
    pub(crate) fn plan_moves(&mut self, out: &mut Vec<Effect>) {
        if self.recovering || self.now < self.hold_until || self.scene_moving().is_some() {
            return;
        }
        let next = self.next_drain_move().or_else(|| {
            if self.config.rebalance {
                self.next_fill_move()
            } else {
                None
            }
        });
        if let Some((scene, to)) = next {
            self.start_move(&scene, to, out);
        }
    }

    /// The running scene of `node` that moves first: the least populated,
    /// then by name.
    fn movable_scene(&self, node: &Node) -> Option<String> {
        node.scenes
            .iter()
            .filter(|name| self.scenes[*name].ready)
            .min_by_key(|name| (self.scenes[*name].population, name.as_str()))
            .cloned()
    }

    /// A scene of a draining server and where it goes.
    fn next_drain_move(&self) -> Option<(String, NodeId)> {
        let to = self.pick_server()?;
        self.nodes
            .iter()
            .filter(|&(&id, n)| n.alive && n.draining && id != to)
            .find_map(|(_, n)| Some((self.movable_scene(n)?, to)))
    }

    /// A scene for a filling server from one at least two scenes ahead of
    /// it. A filler no server is that far ahead of stops filling.
    fn next_fill_move(&mut self) -> Option<(String, NodeId)> {
        let mut fillers: Vec<(usize, NodeId)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.filling && n.can_take())
            .map(|(&id, n)| (n.scenes.len(), id))
            .collect();
        fillers.sort();
        let mut done = Vec::new();
        let mut next = None;
        for (count, filler) in fillers {
            let donor = self
                .nodes
                .iter()
                .filter(|&(&id, n)| id != filler && n.alive && n.kind == NodeKind::SceneServer)
                .max_by_key(|&(&id, n)| (n.scenes.len(), self.node_load(n), std::cmp::Reverse(id)))
                .map(|(_, n)| n)
                .filter(|n| n.scenes.len() >= count + 2);
            match donor {
                None => done.push(filler),
                Some(d) => {
                    // A donor whose scenes are all still loading: wait.
                    if let Some(scene) = self.movable_scene(d) {
                        next = Some((scene, filler));
                        break;
                    }
                }
            }
        }
        for id in done {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.filling = false;
            }
        }
        next
    }

    /// The moves' invariants: a moving scene is placed, on a server other
    /// than the target, and at most one scene moves at a time.
    pub(crate) fn check_move_invariants(&self) -> Result<(), String> {
        let mut moving = 0;
        for (name, s) in &self.scenes {
            let Some(m) = &s.moving else {
                continue;
            };
            moving += 1;
            match s.placement {
                Some((host, _)) if host != m.to => {}
                other => return Err(format!("{name:?} moving to {} from {other:?}", m.to)),
            }
        }
        if moving > 1 {
            return Err(format!("{moving} scenes moving at once"));
        }
        Ok(())
    }
}
