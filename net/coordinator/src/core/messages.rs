//! What a link says: [`Core::on_msg`] dispatches each message to one
//! handler. The registry's messages (register, heartbeat, scene ready,
//! deregister) are handled here; the others live with their concern
//! (`sessions.rs`, `data.rs`, `chat.rs`, `scene_events.rs`). Each handler
//! checks what its sender may do: its role, its registration, and that a
//! session it names is one it opened.

use tessera_cluster::{NodeId, NodeKind};
use tessera_wire::{Epoch, Heartbeat, LinkMsg, Register, Role};
use tracing::{info, warn};

use super::Core;
use super::lookups::Looked;

/// Who sent a message: its link, the link's role, and the node registered
/// on it (once it registered).
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub(super) link: u64,
    pub(super) role: Role,
    pub(super) node: Option<NodeId>,
}

impl Core {
    /// One message from link `id`, handled in the order it came, with
    /// what its link task read for it from the data service (`lookups.rs`).
    pub(super) fn on_msg(&mut self, id: u64, msg: LinkMsg, looked: Looked) {
        self.looked = looked;
        self.dispatch(id, msg);
        self.looked = Looked::default();
    }

    fn dispatch(&mut self, id: u64, msg: LinkMsg) {
        let Some(entry) = self.links.get(&id) else {
            return;
        };
        let from = Origin {
            link: id,
            role: entry.peer.role,
            node: entry.node,
        };
        match msg {
            LinkMsg::Register(r) => self.on_register(from, &r),
            LinkMsg::Heartbeat(h) => self.on_heartbeat(from, h),
            LinkMsg::SceneReady { scene, epoch } => self.on_scene_ready(from, &scene, epoch),
            LinkMsg::SceneReleased { scene, epoch } => self.on_scene_released(from, &scene, epoch),
            LinkMsg::Deregister { reason } => self.on_deregister(from, &reason),
            LinkMsg::SaveBatch(batch) => self.on_save_batch(from, batch),
            LinkMsg::Event {
                scene,
                epoch,
                event,
            } => self.on_scene_event(from, &scene, epoch, event),
            LinkMsg::OpenSession {
                request,
                account,
                client,
                nonce,
            } => self.on_open_session(from, request, account, client, &nonce),
            LinkMsg::ListAvatars { session } => self.on_list_avatars(from, session),
            LinkMsg::CreateAvatar { session, .. } => self.on_create_avatar(from, session),
            LinkMsg::Chat { session, to, text } => self.on_chat(from, session, to, text),
            LinkMsg::CloseSession { session } => self.on_close_session(from, session),
            LinkMsg::AttachAvatar { session, avatar } => {
                self.on_attach_avatar(from, session, avatar)
            }
            LinkMsg::DetachAvatar { session } => self.on_detach_avatar(from, session),
            LinkMsg::Snapshot {
                request, snapshot, ..
            } if from.role == Role::SceneServer => self.on_snapshot(request, snapshot),
            other => self.refuse(
                id,
                format!("unexpected {} from a {}", other.kind(), from.role),
            ),
        }
    }

    /// A scene server or a gate joins the registry under its link's node
    /// name. A second live link under a name already connected is refused
    /// and closed.
    fn on_register(&mut self, from: Origin, r: &Register) {
        let kind = match from.role {
            Role::SceneServer => NodeKind::SceneServer,
            Role::Gate => NodeKind::Gate,
            role => return self.refuse(from.link, format!("a {role} does not register")),
        };
        let Some(name) = self.links.get(&from.link).map(|l| l.peer.node.clone()) else {
            return;
        };
        if self.name_taken(&name, from.link) {
            self.stats.links_refused += 1;
            warn!(%name, "second link under a live node name refused");
            self.refuse(
                from.link,
                format!("node name {name:?} is already connected"),
            );
            return self.kill_link(from.link);
        }
        if r.game.len() > tessera_wire::MAX_GAME_NAME {
            return self.refuse(from.link, "game name too long");
        }
        let now = self.now();
        match self
            .cluster
            .register(now, &name, &r.addr, kind, r.capacity, &r.hosted)
        {
            Ok((node, effects)) => {
                self.cluster.set_game(node, &r.game);
                self.registered(from.link, node, kind, &name, r);
                self.apply(effects);
            }
            Err(e) => self.refuse(from.link, e.to_string()),
        }
    }

    /// Whether a live link other than `link` carries node `name`.
    fn name_taken(&self, name: &str, link: u64) -> bool {
        self.cluster
            .node_by_name(name)
            .and_then(|node| self.node_links.get(&node))
            .is_some_and(|&other| other != link)
    }

    /// `link` carries `node` from now on (a gate's client addresses are
    /// learned); the node is told how often to heartbeat.
    fn registered(&mut self, link: u64, node: NodeId, kind: NodeKind, name: &str, r: &Register) {
        if let Some(l) = self.links.get_mut(&link) {
            l.node = Some(node);
        }
        if kind == NodeKind::Gate {
            let addrs = r
                .addr
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            self.gate_load.insert(node, (0, addrs));
        }
        self.node_links.insert(node, link);
        if kind == NodeKind::Gate {
            self.expect_replay(node, link);
        }
        info!(%name, %node, addr = %r.addr, hosted = r.hosted.len(), game = %r.game, "registered");
        self.send_link(
            link,
            &LinkMsg::Registered {
                heartbeat_ms: self.heartbeat_ms,
            },
        );
    }

    /// Liveness and load; a gate's heartbeat also carries its client count
    /// and open addresses.
    fn on_heartbeat(&mut self, from: Origin, h: Heartbeat) {
        let Some(node) = from.node else {
            return self.refuse(from.link, "register first");
        };
        if from.role == Role::Gate {
            self.gate_load.insert(node, (h.online, h.addrs));
        }
        let now = self.now();
        match self.cluster.heartbeat(now, node, &h.scenes) {
            Ok(effects) => self.apply(effects),
            Err(e) => self.unknown_node(from.link, e),
        }
    }

    /// A scene server has `scene` loaded and ticking under `epoch`.
    fn on_scene_ready(&mut self, from: Origin, scene: &str, epoch: Epoch) {
        let Some(node) = from.node else {
            return self.refuse(from.link, "register first");
        };
        let now = self.now();
        match self.cluster.scene_ready(now, node, scene, epoch) {
            Ok(effects) => {
                info!(%scene, epoch, %node, "scene ready");
                self.apply(effects);
            }
            Err(e) => self.unknown_node(from.link, e),
        }
    }

    /// A node leaves on purpose: its scenes are placed elsewhere.
    fn on_deregister(&mut self, from: Origin, reason: &str) {
        let Some(node) = from.node else {
            return;
        };
        info!(%node, %reason, "deregistered");
        if let Some(l) = self.links.get_mut(&from.link) {
            l.node = None;
        }
        self.node_links.remove(&node);
        let now = self.now();
        if let Ok(effects) = self.cluster.deregister(now, node) {
            self.apply(effects);
        }
    }
}
