//! Carrying out the cluster state's [`Effect`]s, in order, one function per
//! effect. Those that need the disk are done off the lock (`io.rs`); a
//! durable write that fails stops the rest of the batch, so nothing carrying
//! an epoch leaves before the epoch is stored.

use tessera_cluster::{DropReason, Effect, KickReason, NodeId, SessionId};
use tessera_sim::protocol::AvatarId;
use tessera_wire::{AttachedSession, Epoch, LinkMsg, SessionEvent, WireObjectState, WirePcState};
use tracing::{info, warn};

use super::Core;
use super::io::Step;

impl Core {
    /// Carries out one effect now, or says it needs the disk (`io.rs`).
    pub(super) fn apply_one(&mut self, effect: Effect) -> Step {
        match effect {
            Effect::PersistEpoch { scene, epoch } => return self.persist_epoch(scene, epoch),
            Effect::PlaceScene {
                server,
                scene,
                epoch,
            } => return self.place_scene(server, scene, epoch),
            Effect::DropScene {
                server,
                scene,
                epoch,
                reason,
            } => self.drop_scene(server, scene, epoch, reason),
            Effect::NodeDown { node } => self.node_down(node),
            Effect::TransferAborted {
                avatar,
                session,
                scene,
            } => self.transfer_aborted(avatar, session, &scene),
            Effect::PersistAvatarScene { avatar, scene } => {
                return self.persist_avatar_scene(avatar, scene);
            }
            Effect::AttachAt {
                server,
                scene,
                epoch,
                avatar,
                session,
            } => self.attach_at(server, scene, epoch, avatar, session),
            Effect::DetachAt {
                server,
                scene,
                epoch,
                avatar,
                session,
            } => self.detach_at(server, scene, epoch, avatar, session),
            Effect::SyncAttached {
                server,
                scene,
                epoch,
                attached,
            } => self.sync_attached(server, scene, epoch, attached),
            Effect::Kick { session, reason } => self.kick_session(session, reason),
        }
        Step::Done
    }

    /// Tells `server` to host `scene`, with its last flushed states (read
    /// off the lock, `io.rs`). If they could not be read, nothing is sent:
    /// the server never reports the scene, and the cluster places it again
    /// (with a new epoch, and another try at the states) once the placement
    /// is older than the heartbeat timeout.
    pub(super) fn place_loaded(
        &mut self,
        server: NodeId,
        scene: String,
        epoch: Epoch,
        states: Vec<WirePcState>,
        objects: Vec<WireObjectState>,
    ) {
        self.stats.placements += 1;
        if let Some(prev) = self.last_host.insert(scene.clone(), server)
            && self.cluster.node(prev).is_none_or(|n| !n.alive)
        {
            self.stats.failovers += 1;
        }
        info!(%scene, epoch, %server, states = states.len(), objects = objects.len(), "placing scene");
        self.send_placement(server, scene, epoch, states, objects);
    }

    /// Tells `server` to stop hosting `scene`: without writing if its epoch
    /// is stale, after a flush otherwise.
    fn drop_scene(&mut self, server: NodeId, scene: String, epoch: Epoch, reason: DropReason) {
        info!(%scene, epoch, %server, ?reason, "dropping scene");
        let msg = match reason {
            DropReason::Stale { current } => LinkMsg::EpochStale { scene, current },
            DropReason::UnknownScene | DropReason::NotReported | DropReason::Move { .. } => {
                LinkMsg::DropScene { scene, epoch }
            }
        };
        self.send_node(server, &msg);
    }

    /// The node missed its heartbeats: its link is closed.
    fn node_down(&mut self, node: NodeId) {
        warn!(%node, "node down (no heartbeat)");
        self.stats.nodes_down += 1;
        if let Some(id) = self.node_links.remove(&node) {
            self.kill_link(id);
        }
        // A gate's sessions ended with it.
        self.forget_ended_sessions();
    }

    /// A portal out of `scene` was cancelled (its placement changed before
    /// the detach was reported, or its session ended midway): the pending
    /// arrival is forgotten, so the avatar's next detach and portal are
    /// handled as such.
    fn transfer_aborted(&mut self, avatar: AvatarId, session: SessionId, scene: &str) {
        self.arrivals.remove(&avatar);
        self.arrival_states.remove(&avatar);
        info!(avatar, ?session, %scene, "transfer aborted");
    }

    /// Attaches the avatar at `server` (with its arrival state after a
    /// portal) and tells the session where its scene is.
    fn attach_at(
        &mut self,
        server: NodeId,
        scene: String,
        epoch: Epoch,
        avatar: AvatarId,
        session: SessionId,
    ) {
        let gate = self.gate_name(session);
        let state = self.arrival_states.remove(&avatar);
        let (name, addr) = self.node_name_addr(server);
        self.send_node(
            server,
            &LinkMsg::AttachAt {
                scene: scene.clone(),
                epoch,
                session,
                avatar,
                gate,
                state,
            },
        );
        self.send_session(
            session,
            SessionEvent::Routed {
                avatar,
                scene,
                epoch,
                server: name,
                addr,
            },
        );
    }

    /// Detaches the avatar at `server`: the host saves it and keeps it in
    /// the scene, offline.
    fn detach_at(
        &mut self,
        server: NodeId,
        scene: String,
        epoch: Epoch,
        avatar: AvatarId,
        session: SessionId,
    ) {
        self.send_node(
            server,
            &LinkMsg::DetachAt {
                scene,
                epoch,
                session,
                avatar,
            },
        );
    }

    /// Tells `server` exactly who is attached in `scene`, each with the
    /// gate carrying its session.
    fn sync_attached(
        &mut self,
        server: NodeId,
        scene: String,
        epoch: Epoch,
        attached: Vec<(AvatarId, SessionId)>,
    ) {
        let attached = attached
            .into_iter()
            .map(|(avatar, session)| AttachedSession {
                avatar,
                session,
                gate: self.gate_name(session),
            })
            .collect();
        self.send_node(
            server,
            &LinkMsg::SyncAttached {
                scene,
                epoch,
                attached,
            },
        );
    }

    /// Ends `session` at its gate, telling the client why.
    fn kick_session(&mut self, session: SessionId, reason: KickReason) {
        let reason = match reason {
            KickReason::DuplicateLogin => "logged in elsewhere".to_owned(),
        };
        self.send_session(session, SessionEvent::Kicked { reason });
        self.sessions.remove(&session);
    }
}
