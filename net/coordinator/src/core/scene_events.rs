//! What scenes report through their hosts: an avatar attached, an attach
//! rejected, an avatar detached (which completes a portal transfer), and an
//! avatar stepping into a portal. Events from a placement that is no longer
//! current are ignored.

use tessera_cluster::SessionId;
use tessera_sim::protocol::AvatarId;
use tessera_wire::{Epoch, SessionEvent, WireEvent, WirePcState};
use tracing::{debug, info, warn};

use super::Core;
use super::messages::Origin;

/// A portal transfer in flight: where the avatar arrives.
pub(super) struct Arrival {
    scene: String,
    position: [f32; 2],
}

impl Core {
    /// An event of `scene` at placement `epoch`, from the scene's host.
    pub(super) fn on_scene_event(
        &mut self,
        from: Origin,
        scene: &str,
        epoch: Epoch,
        event: WireEvent,
    ) {
        let Some(node) = from.node else {
            return self.refuse(from.link, "register first");
        };
        if self.cluster.placement(scene) != Some((node, epoch)) {
            self.stats.events_stale += 1;
            debug!(%scene, epoch, "event from a stale placement ignored");
            return;
        }
        match event {
            WireEvent::Attached {
                client,
                avatar,
                net_id,
            } => self.send_session(
                SessionId(client),
                SessionEvent::Attached {
                    avatar,
                    scene: scene.to_owned(),
                    net_id,
                },
            ),
            WireEvent::AttachRejected {
                client,
                avatar,
                reason,
            } => self.on_attach_rejected(scene, client, avatar, &reason),
            WireEvent::Detached { client, state } => self.on_detached(scene, client, state),
            WireEvent::Portal {
                client,
                avatar,
                target,
                target_pos,
            } => self.on_portal(client, avatar, target, target_pos),
        }
    }

    /// The scene refused the avatar: it is detached in the directory and
    /// the session told why.
    fn on_attach_rejected(&mut self, scene: &str, client: u64, avatar: AvatarId, reason: &str) {
        if let Ok(effects) = self.cluster.detach(SessionId(client), avatar) {
            self.apply(effects);
        }
        self.refuse_session_by(
            SessionId(client),
            format!("scene {scene} refused: {reason}"),
        );
    }

    /// The avatar is detached and saved: the end of a portal's first half,
    /// or of a plain detach (the session is told).
    fn on_detached(&mut self, scene: &str, client: u64, state: WirePcState) {
        let avatar = state.avatar;
        match self.arrivals.remove(&avatar) {
            Some(arrival) => self.complete_transfer(scene, arrival, state),
            None => self.send_session(
                SessionId(client),
                SessionEvent::Detached {
                    avatar,
                    scene: scene.to_owned(),
                },
            ),
        }
    }

    /// Commits a portal transfer: the avatar arrives online at the portal's
    /// target position, with the rest of the state its source saved.
    fn complete_transfer(&mut self, from: &str, arrival: Arrival, mut state: WirePcState) {
        let avatar = state.avatar;
        state.position = arrival.position;
        state.online = true;
        self.arrival_states.insert(avatar, state);
        match self.cluster.complete_transfer(avatar) {
            Ok(effects) => {
                self.stats.transfers += 1;
                info!(avatar, %from, to = %arrival.scene, "transfer complete");
                self.apply(effects);
            }
            Err(e) => {
                self.arrival_states.remove(&avatar);
                warn!(avatar, error = %e, "transfer could not complete");
            }
        }
    }

    /// The avatar stepped into a portal to `target`: it is detached at its
    /// scene (which saves it) and the session told it is moving.
    fn on_portal(&mut self, client: u64, avatar: AvatarId, target: String, position: [f32; 2]) {
        if self.arrivals.contains_key(&avatar) {
            return;
        }
        match self.cluster.begin_transfer(avatar, &target) {
            Ok(effects) => {
                self.arrivals.insert(
                    avatar,
                    Arrival {
                        scene: target.clone(),
                        position,
                    },
                );
                self.send_session(
                    SessionId(client),
                    SessionEvent::Transferring {
                        avatar,
                        scene: target,
                    },
                );
                self.apply(effects);
            }
            Err(e) => debug!(avatar, error = %e, "portal ignored"),
        }
    }
}
