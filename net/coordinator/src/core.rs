//! The coordinator's state behind its lock: the cluster state machine, the
//! data service, the links, and the glue that turns messages into calls and
//! effects into messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_persistence::{self as db, Store, Writer};
use tessera_sim::protocol::AvatarId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::login::{Admission, AdmitError, Logins};
use tessera_cluster::{
    AccountId, ClusterState, ClusterStatus, DropReason, Effect, KickReason, NodeId, NodeKind,
    SessionId,
};
use tessera_link::{Link, LinkSender, PeerInfo};
use tessera_wire::{
    AttachedSession, AvatarInfo, ChatScope, ChatTarget, LinkMsg, Role, SessionEvent, WireEvent,
    WirePcState, WireSaveBatch,
};

use super::lock;

/// Counters of one coordinator, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CoordinatorStats {
    /// Links accepted (after the handshake).
    pub links: u64,
    /// Links refused after the handshake (second link under a live name,
    /// messages before registering, a role that may not send a message).
    pub links_refused: u64,
    /// Messages refused with [`LinkMsg::Refused`].
    pub refused: u64,
    /// Sends that did not fit a link's queue, or had no link.
    pub sends_failed: u64,
    /// Save batches handed to the writer.
    pub batches: u64,
    /// Save batches refused for a stale epoch (a paused or replaced host).
    pub batches_stale: u64,
    /// Durable writes of the coordinator's own (epochs, avatar scenes) that failed.
    pub persist_errors: u64,
    /// Scene events from a placement that is no longer current.
    pub events_stale: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Attach requests accepted / refused.
    pub attaches: u64,
    pub attaches_refused: u64,
    /// Completed portal transfers.
    pub transfers: u64,
    /// Chat lines delivered.
    pub chat_lines: u64,
    /// Connect tokens issued, used once (burnt), refused (replayed, expired,
    /// unknown), and issued but not used yet.
    pub tokens_issued: u64,
    pub tokens_burnt: u64,
    pub tokens_refused: u64,
    pub tokens_pending: u64,
    /// Logins waiting in the queue.
    pub queued: u64,
}

struct LinkEntry {
    sender: LinkSender,
    kill: CancellationToken,
    peer: PeerInfo,
    /// The registered node on this link, once it registered.
    node: Option<NodeId>,
}

/// A portal transfer in flight: where the avatar arrives.
struct Arrival {
    scene: String,
    position: [f32; 2],
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("links", &self.links.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

pub(super) struct Core {
    cluster: ClusterState,
    clock: Instant,
    store: Arc<Store>,
    writer: Option<Writer>,
    scene_ids: BTreeMap<String, db::SceneId>,
    heartbeat_ms: u32,
    next_link: u64,
    links: BTreeMap<u64, LinkEntry>,
    node_links: BTreeMap<NodeId, u64>,
    /// Session → the link (gate or tool) that opened it.
    sessions: BTreeMap<u64, u64>,
    /// Portal transfers begun, by avatar.
    arrivals: BTreeMap<AvatarId, Arrival>,
    /// States to attach with on arrival, by avatar (consumed by the attach).
    arrival_states: BTreeMap<AvatarId, WirePcState>,
    /// Gates' last reported load: connected clients and open addresses.
    gate_load: BTreeMap<NodeId, (u32, Vec<String>)>,
    /// Avatar names, for chat (learned at attach).
    avatar_names: BTreeMap<AvatarId, String>,
    pub(super) logins: Logins,
    stats: CoordinatorStats,
}

impl Core {
    pub(super) fn new(
        cluster: ClusterState,
        clock: Instant,
        store: Arc<Store>,
        writer: Writer,
        scene_ids: BTreeMap<String, db::SceneId>,
        heartbeat_ms: u32,
        logins: Logins,
    ) -> Self {
        Self {
            cluster,
            clock,
            store,
            writer: Some(writer),
            scene_ids,
            heartbeat_ms,
            next_link: 1,
            links: BTreeMap::new(),
            node_links: BTreeMap::new(),
            sessions: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            arrival_states: BTreeMap::new(),
            gate_load: BTreeMap::new(),
            avatar_names: BTreeMap::new(),
            logins,
            stats: CoordinatorStats::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn status(&self) -> ClusterStatus {
        let mut status = self.cluster.status();
        for g in &mut status.gates {
            if let Some(node) = self.cluster.node_by_name(&g.name) {
                g.online = self.gate_load.get(&node).map_or(0, |(n, _)| *n);
            }
        }
        status
    }

    /// Players connected to live gates.
    pub(super) fn online(&self) -> u64 {
        self.gate_load
            .iter()
            .filter(|(n, _)| self.cluster.node(**n).is_some_and(|v| v.alive))
            .map(|(_, (o, _))| u64::from(*o))
            .sum()
    }

    /// The open client addresses of the least-loaded live gate.
    fn gate_addrs(&self) -> Vec<String> {
        self.gate_load
            .iter()
            .filter(|(n, (_, addrs))| {
                !addrs.is_empty() && self.cluster.node(**n).is_some_and(|v| v.alive)
            })
            .min_by_key(|(n, (online, _))| (*online, **n))
            .map(|(_, (_, addrs))| addrs.clone())
            .unwrap_or_default()
    }

    /// A login for `account` (password or resume key already checked).
    pub(super) fn admit(&mut self, account: u64) -> Result<Admission, AdmitError> {
        let online = self.online();
        let now = self.now();
        let gates = self.gate_addrs();
        let sessions = &self.sessions;
        self.logins
            .admit(account, online, now, &gates, |c| !sessions.contains_key(&c))
    }

    /// A queued login polls.
    pub(super) fn poll(&mut self, ticket: &str) -> Result<Admission, AdmitError> {
        let online = self.online();
        let now = self.now();
        let gates = self.gate_addrs();
        let sessions = &self.sessions;
        self.logins
            .poll(ticket, online, now, &gates, |c| !sessions.contains_key(&c))
    }

    /// Ends `account`'s session (operator kick or ban): the client is told
    /// why and disconnected by its gate; its avatar is detached.
    pub(super) fn kick(&mut self, account: u64, reason: &str) -> bool {
        let Some(session) = self.cluster.session_of(AccountId(account)) else {
            return false;
        };
        self.send_session(
            session.0,
            SessionEvent::Kicked {
                reason: reason.to_owned(),
            },
        );
        let effects = self.cluster.logout(session);
        self.sessions.remove(&session.0);
        self.apply(effects);
        true
    }

    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn session_account(&self, session: u64) -> Option<u64> {
        self.cluster
            .session_account(SessionId(session))
            .map(|a| a.0)
    }

    fn send_avatars(&mut self, session: u64) {
        let Some(account) = self.session_account(session) else {
            return self.refuse_session_by(session, "unknown session".into());
        };
        match self.store.list_avatars(account) {
            Ok(list) => {
                let names: BTreeMap<db::SceneId, String> = self
                    .scene_ids
                    .iter()
                    .map(|(n, id)| (*id, n.clone()))
                    .collect();
                let avatars = list
                    .into_iter()
                    .filter(|a| a.status != db::AvatarStatus::Deleted)
                    .map(|a| AvatarInfo {
                        id: a.id,
                        name: a.name,
                        scene: names.get(&a.scene).cloned().unwrap_or_default(),
                    })
                    .collect();
                self.send_session(session, SessionEvent::Avatars(avatars));
            }
            Err(e) => self.refuse_session_by(session, format!("data service: {e}")),
        }
    }

    fn create_avatar(&mut self, session: u64, name: &str) {
        let Some(account) = self.session_account(session) else {
            return self.refuse_session_by(session, "unknown session".into());
        };
        let start = self.logins.config().start_scene.clone();
        let Some(&scene) = self
            .scene_ids
            .get(&start)
            .or_else(|| self.scene_ids.values().next())
        else {
            return self.refuse_session_by(session, "no scene to start in".into());
        };
        let new = db::NewAvatar {
            name: name.to_owned(),
            figure: "default".into(),
            scene,
        };
        match self.store.create_avatar(account, &new) {
            Ok(_) => self.send_avatars(session),
            Err(e) => self.refuse_session_by(session, format!("cannot create avatar: {e}")),
        }
    }

    /// A chat line: to the sender's scene, everyone, or one avatar by name.
    fn chat(&mut self, session: u64, to: ChatTarget, text: String) {
        if text.len() > tessera_proto::client::MAX_CHAT_BYTES || text.is_empty() {
            return self.refuse_session_by(session, "chat text empty or too long".into());
        }
        let Some(avatar) = self.cluster.session_avatar(SessionId(session)) else {
            return self.refuse_session_by(session, "enter the world to chat".into());
        };
        let from = self.avatar_name(avatar);
        let online_in = |core: &Self, scene: Option<&str>| -> Vec<u64> {
            core.cluster
                .avatars()
                .filter(|a| scene.is_none_or(|s| a.scene == s))
                .filter_map(|a| match a.presence {
                    tessera_cluster::AvatarPresence::Online { session } => Some(session.0),
                    _ => None,
                })
                .collect()
        };
        let (targets, scope) = match to {
            ChatTarget::Scene => {
                let scene = self.cluster.avatar(avatar).map(|a| a.scene);
                (online_in(self, scene.as_deref()), ChatScope::Scene)
            }
            ChatTarget::Global => (online_in(self, None), ChatScope::Global),
            ChatTarget::Whisper(name) => {
                let target = self.store.avatar_by_name(&name).ok().flatten();
                let to_session = target.and_then(|t| match self.cluster.avatar(t.id)?.presence {
                    tessera_cluster::AvatarPresence::Online { session } => Some(session.0),
                    _ => None,
                });
                match to_session {
                    Some(s) => (vec![s], ChatScope::Whisper),
                    None => {
                        return self.refuse_session_by(session, format!("{name} is not online"));
                    }
                }
            }
        };
        // One message per gate link.
        let mut by_link: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for s in targets {
            if let Some(&link) = self.sessions.get(&s) {
                by_link.entry(link).or_default().push(s);
            }
        }
        self.stats.chat_lines += 1;
        for (link, sessions) in by_link {
            self.send_link(
                link,
                &LinkMsg::ChatTo {
                    sessions,
                    from: from.clone(),
                    scope,
                    text: text.clone(),
                },
            );
        }
    }

    fn avatar_name(&mut self, avatar: AvatarId) -> String {
        if let Some(n) = self.avatar_names.get(&avatar) {
            return n.clone();
        }
        let name = self
            .store
            .avatar(avatar)
            .ok()
            .flatten()
            .map_or_else(|| format!("#{avatar}"), |a| a.name);
        self.avatar_names.insert(avatar, name.clone());
        name
    }

    pub(super) fn stats(&self) -> CoordinatorStats {
        CoordinatorStats {
            tokens_issued: self.logins.issued,
            tokens_burnt: self.logins.burnt,
            tokens_refused: self.logins.refused_tokens,
            tokens_pending: self.logins.pending() as u64,
            queued: self.logins.queued() as u64,
            ..self.stats
        }
    }

    pub(super) fn tick(&mut self) {
        let now = self.now();
        let effects = self.cluster.tick(now);
        self.apply(effects);
    }

    /// Final flush at shutdown: every pending save is committed.
    pub(super) fn close(&mut self) {
        for l in self.links.values() {
            l.kill.cancel();
        }
        if let Some(w) = self.writer.take() {
            let stats = w.shutdown();
            info!(?stats, "writer stopped");
        }
    }

    // -----------------------------------------------------------------------
    // Links
    // -----------------------------------------------------------------------

    fn add_link(&mut self, peer: PeerInfo, sender: LinkSender, kill: CancellationToken) -> u64 {
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

    fn link_closed(&mut self, id: u64) {
        let Some(entry) = self.links.remove(&id) else {
            return;
        };
        if let Some(node) = entry.node
            && self.node_links.get(&node) == Some(&id)
        {
            self.node_links.remove(&node);
        }
        // Sessions of a gate that went away stay in the directory: the gate
        // (or its clients, through login) comes back and resumes them.
        debug!(node = %entry.peer.node, role = %entry.peer.role, "link closed");
    }

    fn send_link(&mut self, id: u64, msg: &LinkMsg) {
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
    }

    fn send_node(&mut self, node: NodeId, msg: &LinkMsg) {
        match self.node_links.get(&node).copied() {
            Some(id) => self.send_link(id, msg),
            None => {
                self.stats.sends_failed += 1;
                debug!(%node, kind = msg.kind(), "no link to node");
            }
        }
    }

    fn send_session(&mut self, session: u64, event: SessionEvent) {
        if let Some(&id) = self.sessions.get(&session) {
            self.send_link(id, &LinkMsg::Session { session, event });
        }
    }

    fn refuse(&mut self, id: u64, reason: impl Into<String>) {
        self.stats.refused += 1;
        let reason = reason.into();
        debug!(link = id, %reason, "refused");
        self.send_link(id, &LinkMsg::Refused { reason });
    }

    fn gate_name(&self, session: SessionId) -> String {
        self.sessions
            .get(&session.0)
            .and_then(|id| self.links.get(id))
            .map(|l| l.peer.node.clone())
            .unwrap_or_default()
    }

    fn node_name_addr(&self, node: NodeId) -> (String, String) {
        self.cluster
            .node(node)
            .map(|n| (n.name, n.addr))
            .unwrap_or_default()
    }

    // -----------------------------------------------------------------------
    // Messages
    // -----------------------------------------------------------------------

    fn on_msg(&mut self, id: u64, msg: LinkMsg) {
        let Some(entry) = self.links.get(&id) else {
            return;
        };
        let role = entry.peer.role;
        let node = entry.node;
        let now = self.now();
        match msg {
            LinkMsg::Register(r) => {
                let kind = match role {
                    Role::SceneServer => NodeKind::SceneServer,
                    Role::Gate => NodeKind::Gate,
                    _ => return self.refuse(id, format!("a {role} does not register")),
                };
                let name = entry.peer.node.clone();
                if let Some(other) = self.cluster.node_by_name(&name)
                    && let Some(&other_link) = self.node_links.get(&other)
                    && other_link != id
                {
                    self.stats.links_refused += 1;
                    warn!(%name, "second link under a live node name refused");
                    self.refuse(id, format!("node name {name:?} is already connected"));
                    if let Some(l) = self.links.get(&id) {
                        l.kill.cancel();
                    }
                    return;
                }
                match self
                    .cluster
                    .register(now, &name, &r.addr, kind, r.capacity, &r.hosted)
                {
                    Ok((node, effects)) => {
                        if let Some(l) = self.links.get_mut(&id) {
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
                        self.node_links.insert(node, id);
                        info!(%name, %node, addr = %r.addr, hosted = r.hosted.len(), "registered");
                        self.send_link(
                            id,
                            &LinkMsg::Registered {
                                heartbeat_ms: self.heartbeat_ms,
                            },
                        );
                        self.apply(effects);
                    }
                    Err(e) => self.refuse(id, e.to_string()),
                }
            }
            LinkMsg::Heartbeat(h) => {
                let Some(node) = node else {
                    return self.refuse(id, "register first");
                };
                if role == Role::Gate {
                    self.gate_load.insert(node, (h.online, h.addrs.clone()));
                }
                match self.cluster.heartbeat(now, node, &h.scenes) {
                    Ok(effects) => self.apply(effects),
                    Err(e) => self.unknown_node(id, e),
                }
            }
            LinkMsg::SceneReady { scene, epoch } => {
                let Some(node) = node else {
                    return self.refuse(id, "register first");
                };
                match self.cluster.scene_ready(now, node, &scene, epoch) {
                    Ok(effects) => {
                        info!(%scene, epoch, %node, "scene ready");
                        self.apply(effects);
                    }
                    Err(e) => self.unknown_node(id, e),
                }
            }
            LinkMsg::Deregister { reason } => {
                let Some(node) = node else {
                    return;
                };
                info!(%node, %reason, "deregistered");
                if let Some(l) = self.links.get_mut(&id) {
                    l.node = None;
                }
                self.node_links.remove(&node);
                if let Ok(effects) = self.cluster.deregister(now, node) {
                    self.apply(effects);
                }
            }
            LinkMsg::SaveBatch(batch) => {
                if node.is_none() || role != Role::SceneServer {
                    return self.refuse(id, "only a registered scene server saves");
                }
                self.save(id, batch);
            }
            LinkMsg::Event {
                scene,
                epoch,
                event,
            } => {
                let Some(node) = node else {
                    return self.refuse(id, "register first");
                };
                if self.cluster.placement(&scene) != Some((node, epoch)) {
                    self.stats.events_stale += 1;
                    debug!(%scene, epoch, "event from a stale placement ignored");
                    return;
                }
                self.on_event(&scene, event);
            }
            LinkMsg::OpenSession {
                request,
                account,
                client,
                nonce,
            } => match role {
                Role::Gate if nonce == [0; 16] => self.reopen_session(id, node, account, client),
                Role::Gate => {
                    // A gate's client presents its connect token: the nonce
                    // is burnt (single use) and the token's client id
                    // becomes the session id.
                    if let Err(e) = self.logins.burn(&nonce, account, client) {
                        self.stats.refused += 1;
                        warn!(account, error = %e, "session refused");
                        return self.send_link(
                            id,
                            &LinkMsg::Session {
                                session: client,
                                event: SessionEvent::Refused {
                                    request,
                                    reason: e.to_string(),
                                },
                            },
                        );
                    }
                    self.open_session(id, node, request, account, Some(client));
                }
                Role::Tool => self.open_session(id, node, request, account, None),
                _ => self.refuse(id, format!("a {role} does not open sessions")),
            },
            LinkMsg::ListAvatars { session } => {
                if self.sessions.get(&session) != Some(&id) {
                    return self.refuse_session(id, session, "unknown session");
                }
                self.send_avatars(session);
            }
            LinkMsg::CreateAvatar { session, name } => {
                if self.sessions.get(&session) != Some(&id) {
                    return self.refuse_session(id, session, "unknown session");
                }
                self.create_avatar(session, &name);
            }
            LinkMsg::Chat { session, to, text } => {
                if self.sessions.get(&session) != Some(&id) {
                    return self.refuse_session(id, session, "unknown session");
                }
                self.chat(session, to, text);
            }
            LinkMsg::CloseSession { session } => {
                if self.sessions.get(&session) != Some(&id) {
                    return;
                }
                let effects = self.cluster.logout(SessionId(session));
                self.sessions.remove(&session);
                self.apply(effects);
            }
            LinkMsg::AttachAvatar { session, avatar } => {
                if self.sessions.get(&session) != Some(&id) {
                    return self.refuse_session(id, session, "unknown session");
                }
                self.attach(session, avatar);
            }
            LinkMsg::DetachAvatar { session } => {
                if self.sessions.get(&session) != Some(&id) {
                    return self.refuse_session(id, session, "unknown session");
                }
                let Some(avatar) = self.cluster.session_avatar(SessionId(session)) else {
                    return self.refuse_session(id, session, "no avatar attached");
                };
                match self.cluster.detach(SessionId(session), avatar) {
                    Ok(effects) => self.apply(effects),
                    Err(e) => self.refuse_session(id, session, &e.to_string()),
                }
            }
            other => self.refuse(id, format!("unexpected {} from a {role}", other.kind())),
        }
    }

    fn refuse_session(&mut self, id: u64, session: u64, reason: &str) {
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

    /// The node was deregistered (or the coordinator lost it): close the
    /// link so that it reconnects and registers again.
    fn unknown_node(&mut self, id: u64, e: tessera_cluster::UnknownNode) {
        self.refuse(id, e.to_string());
        if let Some(l) = self.links.get(&id) {
            l.kill.cancel();
        }
    }

    fn save(&mut self, id: u64, batch: WireSaveBatch) {
        let latest = self
            .cluster
            .scene(&batch.scene)
            .map_or(0, |s| s.latest_epoch);
        if batch.epoch < latest {
            self.stats.batches_stale += 1;
            warn!(scene = %batch.scene, epoch = batch.epoch, current = latest, "stale save batch refused");
            self.send_link(
                id,
                &LinkMsg::EpochStale {
                    scene: batch.scene,
                    current: latest,
                },
            );
            return;
        }
        let Some(&scene) = self.scene_ids.get(&batch.scene) else {
            return self.refuse(id, format!("unknown scene {:?}", batch.scene));
        };
        let states = batch.states.iter().map(|s| db_state(scene, s)).collect();
        if let Some(w) = &self.writer {
            w.submit(db::SaveBatch { scene, states });
            self.stats.batches += 1;
        }
    }

    fn open_session(
        &mut self,
        id: u64,
        gate_node: Option<NodeId>,
        request: u64,
        account: u64,
        client: Option<u64>,
    ) {
        let refuse = |core: &mut Self, reason: String| {
            core.stats.refused += 1;
            core.send_link(
                id,
                &LinkMsg::Session {
                    session: 0,
                    event: SessionEvent::Refused { request, reason },
                },
            );
        };
        match self.store.account(account) {
            Ok(Some(a)) if a.status == db::AccountStatus::Open => {}
            Ok(Some(_)) => return refuse(self, format!("account {account} is locked or deleted")),
            Ok(None) => return refuse(self, format!("no account {account}")),
            Err(e) => return refuse(self, format!("data service: {e}")),
        }
        let session = match client {
            Some(c) if !self.sessions.contains_key(&c) => c,
            Some(_) => return refuse(self, "session id in use".into()),
            None => loop {
                let s = new_session_id();
                if !self.sessions.contains_key(&s) {
                    break s;
                }
            },
        };
        let gate = gate_node.filter(|n| {
            self.cluster
                .node(*n)
                .is_some_and(|v| v.kind == NodeKind::Gate)
        });
        match self
            .cluster
            .login(AccountId(account), SessionId(session), gate)
        {
            Ok(effects) => {
                self.stats.sessions += 1;
                self.sessions.insert(session, id);
                self.send_link(
                    id,
                    &LinkMsg::Session {
                        session,
                        event: SessionEvent::Opened { request, account },
                    },
                );
                self.apply(effects);
            }
            Err(e) => refuse(self, e.to_string()),
        }
    }

    /// A gate replays a live session after its link dropped: the same link
    /// owner takes it back; after a coordinator restart (while recovering)
    /// it is opened again with its old id.
    fn reopen_session(&mut self, id: u64, gate_node: Option<NodeId>, account: u64, session: u64) {
        let ok = |core: &mut Self| {
            core.send_link(
                id,
                &LinkMsg::Session {
                    session,
                    event: SessionEvent::Opened {
                        request: 0,
                        account,
                    },
                },
            );
        };
        if self.sessions.contains_key(&session) {
            if self.session_account(session) == Some(account) {
                self.sessions.insert(session, id);
                return ok(self);
            }
            return self.refuse_session(id, session, "session id in use");
        }
        if !self.cluster.recovering() {
            self.stats.refused += 1;
            return self.refuse_session(id, session, "unknown session: log in again");
        }
        self.open_session(id, gate_node, 0, account, Some(session));
    }

    fn attach(&mut self, session: u64, avatar: AvatarId) {
        if self.cluster.avatar(avatar).is_none() {
            // Not in the directory yet: learn it from the data service.
            let found = self.store.avatar(avatar).ok().flatten().and_then(|a| {
                let scene = self.store.scene(a.scene).ok().flatten()?;
                (a.status != db::AvatarStatus::Deleted).then_some((a.account, scene.name))
            });
            let Some((account, scene)) = found else {
                self.stats.attaches_refused += 1;
                return self.refuse_session_by(session, format!("no avatar {avatar}"));
            };
            if let Err(e) = self.cluster.add_avatar(avatar, AccountId(account), &scene) {
                self.stats.attaches_refused += 1;
                return self.refuse_session_by(session, e.to_string());
            }
        }
        match self.cluster.attach(SessionId(session), avatar) {
            Ok(effects) => {
                self.stats.attaches += 1;
                self.apply(effects);
            }
            Err(e) => {
                self.stats.attaches_refused += 1;
                self.refuse_session_by(session, e.to_string());
            }
        }
    }

    fn refuse_session_by(&mut self, session: u64, reason: String) {
        self.stats.refused += 1;
        self.send_session(session, SessionEvent::Refused { request: 0, reason });
    }

    fn on_event(&mut self, scene: &str, event: WireEvent) {
        match event {
            WireEvent::Attached {
                client,
                avatar,
                net_id,
            } => self.send_session(
                client,
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
            } => {
                if let Ok(effects) = self.cluster.detach(SessionId(client), avatar) {
                    self.apply(effects);
                }
                self.refuse_session_by(client, format!("scene {scene} refused: {reason}"));
            }
            WireEvent::Detached { client, state } => {
                let avatar = state.avatar;
                if let Some(arrival) = self.arrivals.remove(&avatar) {
                    let mut st = state;
                    st.position = arrival.position;
                    st.online = true;
                    self.arrival_states.insert(avatar, st);
                    match self.cluster.complete_transfer(avatar) {
                        Ok(effects) => {
                            self.stats.transfers += 1;
                            info!(avatar, from = %scene, to = %arrival.scene, "transfer complete");
                            self.apply(effects);
                        }
                        Err(e) => {
                            self.arrival_states.remove(&avatar);
                            warn!(avatar, error = %e, "transfer could not complete");
                        }
                    }
                } else {
                    self.send_session(
                        client,
                        SessionEvent::Detached {
                            avatar,
                            scene: scene.to_owned(),
                        },
                    );
                }
            }
            WireEvent::Portal {
                client,
                avatar,
                target,
                target_pos,
            } => {
                if self.arrivals.contains_key(&avatar) {
                    return;
                }
                match self.cluster.begin_transfer(avatar, &target) {
                    Ok(effects) => {
                        self.arrivals.insert(
                            avatar,
                            Arrival {
                                scene: target.clone(),
                                position: target_pos,
                            },
                        );
                        self.send_session(
                            client,
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
    }

    // -----------------------------------------------------------------------
    // Effects
    // -----------------------------------------------------------------------

    /// Carries out effects in order. A failed durable write stops the rest.
    pub(super) fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if !self.apply_one(effect) {
                self.stats.persist_errors += 1;
                break;
            }
        }
    }

    fn apply_one(&mut self, effect: Effect) -> bool {
        match effect {
            Effect::PersistEpoch { scene, epoch } => {
                if let Err(e) = self.store.set_scene_epoch(&scene, epoch) {
                    warn!(%scene, epoch, error = %e, "cannot persist epoch; placement held back");
                    return false;
                }
            }
            Effect::PlaceScene {
                server,
                scene,
                epoch,
            } => {
                let states = self.load_states(&scene);
                info!(%scene, epoch, %server, states = states.len(), "placing scene");
                self.send_node(
                    server,
                    &LinkMsg::PlaceScene {
                        scene,
                        epoch,
                        states,
                    },
                );
            }
            Effect::DropScene {
                server,
                scene,
                epoch,
                reason,
            } => {
                info!(%scene, epoch, %server, ?reason, "dropping scene");
                let msg = match reason {
                    DropReason::Stale { current } => LinkMsg::EpochStale { scene, current },
                    DropReason::UnknownScene | DropReason::NotReported => {
                        LinkMsg::DropScene { scene, epoch }
                    }
                };
                self.send_node(server, &msg);
            }
            Effect::NodeDown { node } => {
                warn!(%node, "node down (no heartbeat)");
                if let Some(id) = self.node_links.remove(&node)
                    && let Some(l) = self.links.get(&id)
                {
                    l.kill.cancel();
                }
            }
            Effect::PersistAvatarScene { avatar, scene } => {
                let Some(&scene_id) = self.scene_ids.get(&scene) else {
                    return false;
                };
                if let Err(e) = self.store.set_avatar_scene(avatar, scene_id) {
                    warn!(avatar, %scene, error = %e, "cannot persist the avatar's scene");
                    return false;
                }
                if let Some(st) = self.arrival_states.get(&avatar) {
                    let batch = db::SaveBatch {
                        scene: scene_id,
                        states: vec![db_state(scene_id, st)],
                    };
                    if let Err(e) = self.store.save_batch(&batch) {
                        warn!(avatar, %scene, error = %e, "cannot save the arrival state");
                        return false;
                    }
                }
            }
            Effect::AttachAt {
                server,
                scene,
                epoch,
                avatar,
                session,
            } => {
                let gate = self.gate_name(session);
                let state = self.arrival_states.remove(&avatar);
                let (name, addr) = self.node_name_addr(server);
                self.send_node(
                    server,
                    &LinkMsg::AttachAt {
                        scene: scene.clone(),
                        epoch,
                        session: session.0,
                        avatar,
                        gate,
                        state,
                    },
                );
                self.send_session(
                    session.0,
                    SessionEvent::Routed {
                        avatar,
                        scene,
                        epoch,
                        server: name,
                        addr,
                    },
                );
            }
            Effect::DetachAt {
                server,
                scene,
                epoch,
                avatar,
                session,
            } => self.send_node(
                server,
                &LinkMsg::DetachAt {
                    scene,
                    epoch,
                    session: session.0,
                    avatar,
                },
            ),
            Effect::SyncAttached {
                server,
                scene,
                epoch,
                attached,
            } => {
                let attached = attached
                    .into_iter()
                    .map(|(avatar, session)| AttachedSession {
                        avatar,
                        session: session.0,
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
            Effect::Kick { session, reason } => {
                let reason = match reason {
                    KickReason::DuplicateLogin => "logged in elsewhere".to_owned(),
                };
                self.send_session(session.0, SessionEvent::Kicked { reason });
                self.sessions.remove(&session.0);
            }
        }
        true
    }

    /// A scene's last flushed states: the writer is flushed first, so
    /// everything submitted before this placement is in.
    fn load_states(&mut self, scene: &str) -> Vec<WirePcState> {
        if let Some(w) = &self.writer
            && let Err(e) = w.flush()
        {
            warn!(error = %e, "writer flush before a placement failed");
        }
        let Some(&id) = self.scene_ids.get(scene) else {
            return Vec::new();
        };
        match self.store.load_scene(id) {
            Ok(states) => tessera_host::from_db_states(states)
                .into_iter()
                .map(Into::into)
                .collect(),
            Err(e) => {
                warn!(%scene, error = %e, "cannot load the scene's states");
                Vec::new()
            }
        }
    }
}

fn db_state(scene: db::SceneId, s: &WirePcState) -> db::PcState {
    tessera_host::sink::to_db_state(&(*s).into(), scene)
}

/// A fresh session id: random, with the top bit set so it never collides
/// with the small client ids of synthetic walkers.
pub(super) fn new_session_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock (uniqueness is checked).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t as u64).to_le_bytes();
    }
    u64::from_le_bytes(b) | (1 << 63)
}

/// One link's life at the coordinator: messages go to the core in order
/// until the link closes, the node is declared down, or the coordinator stops.
pub(super) async fn handle_link(core: Arc<Mutex<Core>>, link: Link, stop: CancellationToken) {
    let peer = link.peer().clone();
    let (sender, mut receiver) = link.split();
    let kill = CancellationToken::new();
    let id = lock(&core).add_link(peer, sender, kill.clone());
    loop {
        tokio::select! {
            _ = kill.cancelled() => break,
            _ = stop.cancelled() => break,
            msg = receiver.recv() => match msg {
                Some(msg) => lock(&core).on_msg(id, msg),
                None => break,
            },
        }
    }
    lock(&core).link_closed(id);
}
