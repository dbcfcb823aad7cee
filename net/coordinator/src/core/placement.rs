//! Planned moves: an operator moves a scene or drains a scene server (the
//! admin API), and a scene server says a scene it dropped for a move is
//! released, its saves durable. The decisions are the cluster state's
//! (`tessera_cluster`'s `balance.rs`); this carries them out.

use tessera_cluster::{DrainError, MoveError};
use tessera_wire::{Epoch, Role};
use tracing::info;

use super::Core;
use super::messages::Origin;

impl Core {
    /// An operator moves `scene` to the scene server named `to`.
    pub(crate) fn move_scene(&mut self, scene: &str, to: &str) -> Result<(), MoveError> {
        let now = self.now();
        let effects = self.cluster.move_scene(now, scene, to)?;
        info!(%scene, %to, "operator move");
        self.apply(effects);
        Ok(())
    }

    /// An operator starts (`on`) or stops draining the scene server named
    /// `server`. Returns the scenes still on it.
    pub(crate) fn drain(&mut self, server: &str, on: bool) -> Result<Vec<String>, DrainError> {
        let now = self.now();
        let effects = self.cluster.drain(now, server, on)?;
        info!(%server, on, "operator drain");
        self.apply(effects);
        Ok(self
            .cluster
            .node_by_name(server)
            .and_then(|id| self.cluster.node(id))
            .map(|n| n.scenes)
            .unwrap_or_default())
    }

    /// A scene server dropped `scene` (placed there at `epoch`) and every
    /// state it saved is durable: a move of it goes on.
    pub(super) fn on_scene_released(&mut self, from: Origin, scene: &str, epoch: Epoch) {
        let (Some(node), Role::SceneServer) = (from.node, from.role) else {
            return self.refuse(from.link, "only a registered scene server releases scenes");
        };
        let now = self.now();
        match self.cluster.scene_released(now, node, scene, epoch) {
            Ok(effects) => {
                info!(%scene, epoch, %node, "scene released");
                self.apply(effects);
            }
            Err(e) => self.unknown_node(from.link, e),
        }
    }
}
