//! The instructions the state machine hands to the networked layer.

use tessera_proto::AvatarId;
use tessera_wire::Epoch;

use crate::{NodeId, SessionId};

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
    /// A planned move to `to`: flush, drop, and report the scene released
    /// once every saved state is durable; it is placed on `to` then.
    Move { to: NodeId },
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
    /// [`ClusterState::recover`](crate::ClusterState::recover)) before
    /// sending anything carrying it.
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
    /// The transfer of `avatar` (of `session`) out of `scene` is cancelled;
    /// forget the pending portal. Either the scene's placement changed
    /// before its host reported the detach (that report will never come):
    /// the avatar stays in `scene`, online, and is attached at its current
    /// host (by an [`Effect::AttachAt`] after this one, or when it is
    /// placed). Or its session ended midway: it stays in `scene`, offline,
    /// saved by the detach already sent.
    TransferAborted {
        avatar: AvatarId,
        session: SessionId,
        scene: String,
    },
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
