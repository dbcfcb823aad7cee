//! The scene catalog and its placement: which live scene server hosts each
//! scene, under which epoch, and how a server's claim to a scene is judged.

use std::collections::{BTreeMap, BTreeSet};

use tessera_proto::AvatarId;
use tessera_wire::Epoch;

use crate::{ClusterState, DropReason, Effect, NodeId, NodeKind, SceneStatus};

#[derive(Debug, Clone, Default)]
pub(crate) struct SceneEntry {
    /// Hosting server and epoch, `None` when unplaced.
    pub(crate) placement: Option<(NodeId, Epoch)>,
    /// The highest epoch this scene ever had (issued, adopted or recovered).
    pub(crate) latest: Epoch,
    /// The host reported the scene loaded at the current epoch.
    pub(crate) ready: bool,
    /// When the current placement was made (or adopted).
    pub(crate) placed_at: u64,
    /// Last reported population (kept across failover as a load estimate).
    pub(crate) population: u32,
    pub(crate) tick_p99_us: u32,
    /// Avatars that belong to this scene.
    pub(crate) avatars: BTreeSet<AvatarId>,
    /// A planned move under way (see `balance.rs`).
    pub(crate) moving: Option<crate::balance::Move>,
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
    /// The server a planned move is taking the scene to, if one is under way.
    pub moving_to: Option<NodeId>,
}

impl ClusterState {
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
            moving_to: s.moving.as_ref().map(|m| m.to),
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

    /// Gives up placements `node` does not report: unplaces each scene (the
    /// sweep places it again) and tells the node to drop it.
    pub(crate) fn give_up(
        &mut self,
        node: NodeId,
        scenes: Vec<(String, Epoch)>,
        out: &mut Vec<Effect>,
    ) {
        for (scene, epoch) in scenes {
            self.unplace(&scene, out);
            out.push(Effect::DropScene {
                server: node,
                scene,
                epoch,
                reason: DropReason::NotReported,
            });
        }
    }

    /// Removes `scene`'s placement (its host no longer has it), aborting
    /// the transfers out of it.
    pub(crate) fn unplace(&mut self, scene: &str, out: &mut Vec<Effect>) {
        let Some(s) = self.scenes.get_mut(scene) else {
            return;
        };
        s.moving = None;
        if let Some((node, _)) = s.placement.take() {
            s.ready = false;
            if let Some(n) = self.nodes.get_mut(&node) {
                n.scenes.remove(scene);
            }
        }
        self.abort_transfers_from(scene, out);
    }

    /// The live scene server a new scene goes to, if any: the one hosting
    /// the fewest scenes, then the least total reported population, then by
    /// name and id. A draining server, or one at its capacity, gets nothing.
    pub(crate) fn pick_server(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.can_take())
            .map(|(&id, n)| ((n.scenes.len(), self.node_load(n), n.name.as_str(), id), id))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, id)| id)
    }

    /// The total last reported population of the scenes `n` hosts.
    pub(crate) fn node_load(&self, n: &crate::registry::Node) -> u64 {
        n.scenes
            .iter()
            .map(|s| u64::from(self.scenes[s].population))
            .sum()
    }

    pub(crate) fn place_unplaced(&mut self, out: &mut Vec<Effect>) {
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
            self.place_on(&scene, server, out);
        }
    }

    /// Places the unplaced `scene` on `server` under a fresh epoch, and
    /// attaches its online avatars there.
    pub(crate) fn place_on(&mut self, scene: &str, server: NodeId, out: &mut Vec<Effect>) {
        // A transfer begun while the scene was unplaced sent no detach: it
        // was to be completed at once, so one still pending is aborted (while
        // unplaced, nothing is sent; its avatar is attached below).
        self.abort_transfers_from(scene, out);
        let s = self.scenes.get_mut(scene).expect("a catalog scene");
        let epoch = s.latest + 1;
        s.latest = epoch;
        s.placement = Some((server, epoch));
        s.ready = false;
        s.placed_at = self.now;
        self.nodes
            .get_mut(&server)
            .expect("a registered server")
            .scenes
            .insert(scene.to_owned());
        out.push(Effect::PersistEpoch {
            scene: scene.to_owned(),
            epoch,
        });
        out.push(Effect::PlaceScene {
            server,
            scene: scene.to_owned(),
            epoch,
        });
        self.reattach_scene(scene, out);
    }

    /// `node` (alive, a scene server) says it hosts `scene` at `epoch`.
    /// Returns whether the claim was adopted (the placement changed to it);
    /// the caller then owes the node an [`Effect::SyncAttached`].
    pub(crate) fn claim(
        &mut self,
        node: NodeId,
        scene: &str,
        epoch: Epoch,
        out: &mut Vec<Effect>,
    ) -> bool {
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
        s.moving = None;
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
        self.abort_transfers_from(scene, out);
        true
    }

    /// The placement's invariants: a placed scene's host is alive, a scene
    /// server and lists it, at the scene's latest epoch; the scene's avatar
    /// index agrees with the avatars.
    pub(crate) fn check_placement_invariants(&self) -> Result<(), String> {
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
        Ok(())
    }
}
