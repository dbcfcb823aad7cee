//! Carrying out the cluster state's [`Effect`]s, in order, one function per
//! effect. A durable write that fails stops the rest of the batch, so
//! nothing carrying an epoch leaves before the epoch is stored.

use tessera_cluster::{DropReason, Effect, KickReason, NodeId, SessionId};
use tessera_persistence as db;
use tessera_sim::protocol::AvatarId;
use tessera_wire::{AttachedSession, Epoch, LinkMsg, SessionEvent};
use tracing::{info, warn};

use super::Core;
use super::data::db_state;

/// A durable write failed: the effects after it must not be carried out.
struct NotDurable;

impl Core {
    /// Carries out effects in order. A failed durable write stops the rest.
    pub(crate) fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if self.apply_one(effect).is_err() {
                self.stats.persist_errors += 1;
                break;
            }
        }
    }

    fn apply_one(&mut self, effect: Effect) -> Result<(), NotDurable> {
        match effect {
            Effect::PersistEpoch { scene, epoch } => self.persist_epoch(&scene, epoch)?,
            Effect::PlaceScene {
                server,
                scene,
                epoch,
            } => self.place_scene(server, scene, epoch),
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
                self.persist_avatar_scene(avatar, &scene)?;
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
        Ok(())
    }

    /// Stores `scene`'s latest epoch before anything carrying it is sent.
    fn persist_epoch(&mut self, scene: &str, epoch: Epoch) -> Result<(), NotDurable> {
        self.store.set_scene_epoch(scene, epoch).map_err(|e| {
            warn!(%scene, epoch, error = %e, "cannot persist epoch; placement held back");
            NotDurable
        })
    }

    /// Tells `server` to host `scene`, with its last flushed states. If
    /// they cannot be read, nothing is sent: the server never reports the
    /// scene, and the cluster places it again (with a new epoch, and another
    /// try at the states) once the placement is older than the heartbeat
    /// timeout.
    fn place_scene(&mut self, server: NodeId, scene: String, epoch: Epoch) {
        let states = match self.load_states(&scene) {
            Ok(states) => states,
            Err(e) => {
                self.stats.placements_refused += 1;
                warn!(%scene, epoch, %server, error = %e, "placement held back: the scene's saved states cannot be read");
                return;
            }
        };
        self.stats.placements += 1;
        if let Some(prev) = self.last_host.insert(scene.clone(), server)
            && self.cluster.node(prev).is_none_or(|n| !n.alive)
        {
            self.stats.failovers += 1;
        }
        info!(%scene, epoch, %server, states = states.len(), "placing scene");
        self.send_placement(server, scene, epoch, states);
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

    /// Stores the avatar's new scene (a committed transfer), and the state
    /// it arrives with.
    fn persist_avatar_scene(&mut self, avatar: AvatarId, scene: &str) -> Result<(), NotDurable> {
        let Some(&scene_id) = self.scene_ids.get(scene) else {
            return Err(NotDurable);
        };
        if let Err(e) = self.store.set_avatar_scene(avatar, scene_id) {
            warn!(avatar, %scene, error = %e, "cannot persist the avatar's scene");
            return Err(NotDurable);
        }
        if let Some(st) = self.arrival_states.get(&avatar) {
            let batch = db::SaveBatch {
                scene: scene_id,
                states: vec![db_state(scene_id, st)],
            };
            if let Err(e) = self.store.save_batch(&batch) {
                warn!(avatar, %scene, error = %e, "cannot save the arrival state");
                return Err(NotDurable);
            }
        }
        Ok(())
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
