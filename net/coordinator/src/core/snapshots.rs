//! Scene snapshots for the admin API (`GET /v1/scenes/{name}/snapshot`, read
//! by the bots' view check and the live map at `GET /map`): a request goes to
//! the scene server that hosts the scene, and its answer back to the waiting
//! HTTP handler.
//!
//! The snapshot itself is a copy the scene thread makes between two ticks
//! (`tessera_host`'s runner answers its `Msg::Snapshot` in its own loop, by
//! `SceneWorld::snapshot`): no lock the tick holds is taken, and it never
//! sees a tick half done. It costs that thread one pass over the scene's
//! entities per request; the scene server encodes it off the thread, and at
//! most [`MAX_PENDING_SNAPSHOTS`] wait at once.

use tessera_wire::LinkMsg;
use tokio::sync::oneshot;

use super::Core;

/// Snapshot requests waiting for their scene server at most; more are
/// refused (each answer can be large, and they are for operators and tools).
pub(crate) const MAX_PENDING_SNAPSHOTS: usize = 16;

/// Why a snapshot cannot be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotRefused {
    /// The scene is not placed (or unknown).
    NotPlaced,
    /// [`MAX_PENDING_SNAPSHOTS`] are already waiting.
    Busy,
}

/// The bytes of a postcard-encoded `SceneSnapshot`, or `None` from a scene
/// server that does not host the scene (any more).
pub(crate) type SnapshotReply = Option<Vec<u8>>;

impl Core {
    /// Sends a snapshot request for `scene` to its scene server; returns the
    /// request id (for [`Core::forget_snapshot`]) and where the answer comes.
    pub(crate) fn request_snapshot(
        &mut self,
        scene: &str,
    ) -> Result<(u64, oneshot::Receiver<SnapshotReply>), SnapshotRefused> {
        let (node, _) = self
            .cluster
            .placement(scene)
            .ok_or(SnapshotRefused::NotPlaced)?;
        if self.snapshots.len() >= MAX_PENDING_SNAPSHOTS {
            return Err(SnapshotRefused::Busy);
        }
        self.next_snapshot += 1;
        let request = self.next_snapshot;
        let (tx, rx) = oneshot::channel();
        self.snapshots.insert(request, tx);
        self.send_node(
            node,
            &LinkMsg::SnapshotRequest {
                request,
                scene: scene.to_owned(),
            },
        );
        Ok((request, rx))
    }

    /// The names of the scenes placed now, for the map's "unknown scene" answer.
    pub(crate) fn placed_scenes(&self) -> Vec<String> {
        self.cluster
            .scene_names()
            .filter(|s| self.cluster.placement(s).is_some())
            .map(str::to_owned)
            .collect()
    }

    /// The waiting handler gave up (timed out).
    pub(crate) fn forget_snapshot(&mut self, request: u64) {
        self.snapshots.remove(&request);
    }

    /// A scene server's answer; one for no request waiting is ignored.
    pub(super) fn on_snapshot(&mut self, request: u64, snapshot: SnapshotReply) {
        if let Some(tx) = self.snapshots.remove(&request) {
            let _ = tx.send(snapshot);
        }
    }
}
