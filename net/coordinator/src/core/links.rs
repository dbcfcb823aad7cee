//! The links to scene servers, gates and tools, and sending on them. A send
//! never waits: it goes into the link's bounded queue or is counted as
//! failed.

use tessera_cluster::{NodeId, SessionId};
use tessera_link::{LinkSender, PeerInfo};
use tessera_wire::{Epoch, LinkMsg, PlacementMsgs, SessionEvent, WireObjectState, WirePcState};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, warn};

use super::Core;
use super::placement_stream::stream_chunks;

pub(super) struct LinkEntry {
    pub(super) sender: LinkSender,
    pub(super) kill: CancellationToken,
    pub(super) peer: PeerInfo,
    /// The registered node on this link, once it registered.
    pub(super) node: Option<NodeId>,
}

impl Core {
    /// A new link (after its handshake); returns its id.
    pub(super) fn add_link(
        &mut self,
        peer: PeerInfo,
        sender: LinkSender,
        kill: CancellationToken,
    ) -> u64 {
        let id = self.next_link;
        self.next_link += 1;
        self.stats.links += 1;
        self.links.insert(
            id,
            LinkEntry {
                sender,
                kill,
                peer,
                node: None,
            },
        );
        id
    }

    /// Link `id` is gone; the node's mapping goes with it.
    pub(super) fn link_closed(&mut self, id: u64) {
        let Some(entry) = self.links.remove(&id) else {
            return;
        };
        // Its scene server sends unacknowledged batches again on its next link.
        self.save_acks.retain(|a| a.link != id);
        if let Some(node) = entry.node
            && self.node_links.get(&node) == Some(&id)
        {
            self.node_links.remove(&node);
        }
        // Sessions of a gate that went away stay in the directory: the gate
        // (or its clients, through login) comes back and resumes them.
        debug!(node = %entry.peer.node, role = %entry.peer.role, "link closed");
    }

    /// Queues `msg` on link `id`; a full queue or no link is counted.
    pub(super) fn send_link(&mut self, id: u64, msg: &LinkMsg) {
        self.queue_on_link(id, msg);
    }

    /// [`send_link`](Self::send_link), saying whether `msg` was queued.
    fn queue_on_link(&mut self, id: u64, msg: &LinkMsg) -> bool {
        let ok = self
            .links
            .get(&id)
            .is_some_and(|l| l.sender.try_send(msg).is_ok());
        if !ok {
            self.stats.sends_failed += 1;
            debug!(
                link = id,
                kind = msg.kind(),
                "send failed (no link or queue full)"
            );
        }
        ok
    }

    /// Places `scene` at `epoch` on `node`: a `PlaceScene` announcing the
    /// saved states, queued here in order with the effects after it, then
    /// the states in `SceneStates` chunks ([`tessera_wire::chunks`]),
    /// streamed by a task of their own ([`stream_chunks`]): each is built
    /// from the loaded `Vec` (moved, not cloned) once the one before is
    /// queued, so a scene of any size goes out through the link's bounded
    /// queue, without holding the lock. Attaches that overtake the chunks
    /// are held by the scene server until the placement is whole.
    pub(super) fn send_placement(
        &mut self,
        node: NodeId,
        scene: String,
        epoch: Epoch,
        states: Vec<WirePcState>,
        objects: Vec<WireObjectState>,
    ) {
        let placement =
            PlacementMsgs::new(scene.clone(), epoch, states).map(|msgs| msgs.with_objects(objects));
        let mut msgs = match placement {
            Ok((msgs, 0)) => msgs,
            Ok((msgs, left_out)) => {
                self.stats.objects_left_out += left_out as u64;
                warn!(%scene, epoch, %node, left_out, "placement carries only part of the scene's objects");
                msgs
            }
            Err(e) => {
                self.stats.placements_refused += 1;
                warn!(%scene, epoch, %node, error = %e, "placement held back");
                return;
            }
        };
        let Some(id) = self.node_links.get(&node).copied() else {
            self.stats.sends_failed += 1;
            debug!(%node, "no link to node for a placement");
            return;
        };
        let Some(announce) = msgs.next() else {
            return;
        };
        if !self.queue_on_link(id, &announce) || msgs.chunks() == 0 {
            return;
        }
        let Some(sender) = self.links.get(&id).map(|l| l.sender.clone()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(stream_chunks(sender, msgs).in_current_span());
            }
            // No runtime (a synchronous caller): what fits the queue now.
            Err(_) => {
                for msg in msgs {
                    if !self.queue_on_link(id, &msg) {
                        warn!(%scene, epoch, %node, "placement cut short: the link's queue is full");
                        return;
                    }
                }
            }
        }
    }

    /// Queues `msg` on the link of the registered `node`.
    pub(super) fn send_node(&mut self, node: NodeId, msg: &LinkMsg) {
        match self.node_links.get(&node).copied() {
            Some(id) => self.send_link(id, msg),
            None => {
                self.stats.sends_failed += 1;
                debug!(%node, kind = msg.kind(), "no link to node");
            }
        }
    }

    /// Sends `event` to `session` through the link that opened it.
    pub(super) fn send_session(&mut self, session: SessionId, event: SessionEvent) {
        if let Some(&id) = self.sessions.get(&session) {
            self.send_link(id, &LinkMsg::Session { session, event });
        }
    }

    /// Refuses a message of link `id` with [`LinkMsg::Refused`].
    pub(super) fn refuse(&mut self, id: u64, reason: impl Into<String>) {
        self.stats.refused += 1;
        let reason = reason.into();
        debug!(link = id, %reason, "refused");
        self.send_link(id, &LinkMsg::Refused { reason });
    }

    /// A refusal for one session, on the link that asked.
    pub(super) fn refuse_session(&mut self, id: u64, session: SessionId, reason: &str) {
        self.stats.refused += 1;
        self.send_link(
            id,
            &LinkMsg::Session {
                session,
                event: SessionEvent::Refused {
                    request: 0,
                    reason: reason.to_owned(),
                },
            },
        );
    }

    /// A refusal for one session, on the link that opened it.
    pub(super) fn refuse_session_by(&mut self, session: SessionId, reason: String) {
        self.stats.refused += 1;
        self.send_session(session, SessionEvent::Refused { request: 0, reason });
    }

    /// The node was deregistered (or the coordinator lost it): close the
    /// link so that it reconnects and registers again.
    pub(super) fn unknown_node(&mut self, id: u64, e: tessera_cluster::UnknownNode) {
        self.refuse(id, e.to_string());
        self.kill_link(id);
    }

    /// Closes link `id` (its task ends; the node reconnects).
    pub(super) fn kill_link(&self, id: u64) {
        if let Some(l) = self.links.get(&id) {
            l.kill.cancel();
        }
    }

    /// The node name of the gate carrying `session` (empty if unknown).
    pub(super) fn gate_name(&self, session: SessionId) -> String {
        self.sessions
            .get(&session)
            .and_then(|id| self.links.get(id))
            .map(|l| l.peer.node.clone())
            .unwrap_or_default()
    }

    /// A node's name and address (empty if unknown).
    pub(super) fn node_name_addr(&self, node: NodeId) -> (String, String) {
        self.cluster
            .node(node)
            .map(|n| (n.name, n.addr))
            .unwrap_or_default()
    }
}
