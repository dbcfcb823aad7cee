//! The coordinator link: a task keeps it up and registers the gate; the
//! agent loop sends sessions' requests on it and handles what comes back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tessera_link::{Connector, LinkSender, SendError, bump};
use tessera_proto::{AccountId, ServerMsg, SessionId};
use tessera_wire::{Heartbeat, LinkMsg, Register, SessionEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::agent::{AgentLoop, SessionPhase};
use super::{GateServerError, Inbox, codes};

/// Keeps the coordinator link up: registers, forwards what it hears.
pub(super) async fn coordinator_task(
    mut connector: Connector,
    addresses: Vec<SocketAddr>,
    inbox: mpsc::Sender<Inbox>,
    stop: CancellationToken,
) -> Result<(), GateServerError> {
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            l = connector.connect() => l,
        };
        let link = match link {
            Ok(l) => l,
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(GateServerError::Refused(e)),
        };
        let (sender, mut receiver) = link.split();
        let addr = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if sender
            .send(&LinkMsg::Register(Register {
                addr,
                capacity: 0,
                hosted: Vec::new(),
                game: String::new(),
            }))
            .await
            .is_err()
        {
            continue;
        }
        if inbox.send(Inbox::CoordinatorUp(sender)).await.is_err() {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = receiver.recv() => match m {
                    Some(m) => if inbox.send(Inbox::Coordinator(m)).await.is_err() { return Ok(()) },
                    None => break,
                },
            }
        }
        warn!("coordinator link lost; reconnecting");
        if inbox.send(Inbox::CoordinatorDown).await.is_err() {
            return Ok(());
        }
    }
}

impl AgentLoop {
    /// Sends the coordinator a message if the link is up and has room;
    /// counted as dropped if not.
    pub(super) fn to_coordinator(&self, msg: &LinkMsg) {
        let ok = self
            .coordinator
            .as_ref()
            .is_some_and(|c| c.try_send(msg).is_ok());
        if !ok {
            bump(&self.stats.to_coordinator_dropped);
        }
    }

    /// Tells the coordinator this gate's load and open addresses.
    pub(super) fn heartbeat(&mut self) {
        self.seq += 1;
        let hb = Heartbeat {
            seq: self.seq,
            scenes: Vec::new(),
            online: u32::try_from(self.gate.connected()).unwrap_or(u32::MAX),
            addrs: self
                .gate
                .open_addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        if let Some(c) = &self.coordinator {
            let _ = c.try_send(&LinkMsg::Heartbeat(hb));
        }
    }

    /// What a link task reports.
    pub(super) fn on_inbox(&mut self, m: Inbox) {
        match m {
            Inbox::CoordinatorUp(s) => self.on_coordinator_up(s),
            Inbox::CoordinatorDown => {
                self.stats.registered.store(false, Ordering::Relaxed);
                self.coordinator = None;
                self.replay.clear();
            }
            Inbox::SceneUp(server, task, s) => self.on_scene_link(&server, task, Some(s)),
            Inbox::SceneDown(server, task) => self.on_scene_link(&server, task, None),
            Inbox::SceneGone(server, task) => self.on_scene_gone(&server, task),
            Inbox::Coordinator(msg) => self.on_coordinator(msg),
        }
    }

    /// The coordinator link is (back) up: a heartbeat at once, then the
    /// open sessions are replayed.
    fn on_coordinator_up(&mut self, sender: LinkSender) {
        info!("linked to the coordinator");
        self.coordinator = Some(sender);
        self.heartbeat();
        self.replay_sessions();
    }

    /// After a link loss (or a coordinator restart) the open sessions are
    /// reopened (a zero nonce: no token involved) and their avatars
    /// attached again where they are. They go as fast as the link's queue
    /// takes them, the rest on the next sweeps ([`continue_replay`]): a
    /// gate holds far more sessions than the queue has frames, and a
    /// replay dropped on a full queue would lose its session.
    ///
    /// [`continue_replay`]: Self::continue_replay
    fn replay_sessions(&mut self) {
        self.replay = self
            .agents
            .iter()
            .filter(|(_, a)| a.phase == SessionPhase::Open)
            .map(|(&c, _)| (c, false))
            .collect();
        self.continue_replay();
    }

    /// Sends the replays waiting, until the coordinator link's queue is
    /// full; sessions that ended meanwhile are skipped.
    pub(super) fn continue_replay(&mut self) {
        let Some(link) = self.coordinator.clone() else {
            self.replay.clear();
            return;
        };
        while let Some(&(client, opened)) = self.replay.front() {
            let Some(agent) = self.agents.get(&client) else {
                self.replay.pop_front();
                continue;
            };
            let avatar = agent.avatar;
            let open = LinkMsg::OpenSession {
                request: 0,
                account: AccountId(agent.account),
                client: SessionId(client),
                nonce: [0; 16],
            };
            if !opened {
                match link.try_send(&open) {
                    Ok(()) => {}
                    Err(SendError::QueueFull) => return,
                    Err(_) => {
                        bump(&self.stats.to_coordinator_dropped);
                        self.replay.pop_front();
                        continue;
                    }
                }
                if let Some(front) = self.replay.front_mut() {
                    front.1 = true;
                }
            }
            if let Some(avatar) = avatar {
                let attach = LinkMsg::AttachAvatar {
                    session: SessionId(client),
                    avatar,
                };
                match link.try_send(&attach) {
                    Ok(()) => {
                        if let Some(a) = self.agents.get_mut(&client) {
                            a.replaying_attach = true;
                        }
                    }
                    Err(SendError::QueueFull) => return,
                    Err(_) => bump(&self.stats.to_coordinator_dropped),
                }
            }
            self.replay.pop_front();
        }
    }

    /// Agents are keyed by their transport client id, which is the session
    /// id the coordinator names them by.
    fn on_coordinator(&mut self, msg: LinkMsg) {
        match msg {
            LinkMsg::Session { session, event } => self.on_session(session.0, event),
            LinkMsg::ChatTo {
                sessions,
                from,
                scope,
                text,
            } => self.on_chat_to(sessions, &ServerMsg::Chat { from, scope, text }),
            LinkMsg::Registered { .. } => self.stats.registered.store(true, Ordering::Relaxed),
            LinkMsg::Refused { reason } => warn!(%reason, "the coordinator refused a message"),
            other => debug!(
                kind = other.kind(),
                "unexpected message from the coordinator"
            ),
        }
    }

    /// What the coordinator says of a session, passed on to its client.
    fn on_session(&mut self, session: u64, event: SessionEvent) {
        let Some(agent) = self.agents.get(&session) else {
            return;
        };
        let phase = agent.phase;
        let replaying_attach = agent.replaying_attach;
        match event {
            SessionEvent::Opened { request: 0, .. } if phase == SessionPhase::Open => {
                debug!(session, "session replayed");
            }
            SessionEvent::Opened { account, .. } => self.on_opened(session, account),
            SessionEvent::Refused { reason, .. } if phase == SessionPhase::Opening => {
                bump(&self.stats.sessions_refused);
                self.agents.remove(&session);
                self.kick(session, &reason, codes::KICKED);
            }
            // The replayed attach is refused (the avatar deleted, the scene
            // full…): the client is told why and let go, not left inert.
            SessionEvent::Refused { reason, .. } if replaying_attach => {
                bump(&self.stats.sessions_refused);
                self.agents.remove(&session);
                self.to_coordinator(&LinkMsg::CloseSession {
                    session: SessionId(session),
                });
                let why = format!("your avatar could not be restored after a restart: {reason}");
                self.kick(session, &why, codes::KICKED);
            }
            SessionEvent::Refused { reason, .. } => self.tell(
                session,
                &ServerMsg::Error {
                    code: "refused".into(),
                    text: reason,
                },
            ),
            SessionEvent::Avatars(list) => self.tell(session, &ServerMsg::Avatars(list)),
            SessionEvent::Routed {
                scene,
                epoch,
                server,
                addr,
                ..
            } => self.on_routed(session, scene, epoch, server, &addr),
            SessionEvent::Attached {
                avatar,
                scene,
                net_id,
            } => self.on_attached(session, avatar, scene, net_id),
            SessionEvent::Detached { avatar, .. } => self.on_detached(session, avatar),
            SessionEvent::Transferring { scene, .. } => {
                self.tell(session, &ServerMsg::Moving { scene });
            }
            SessionEvent::Kicked { reason } => {
                bump(&self.stats.cluster_kicks);
                self.agents.remove(&session);
                self.kick(session, &reason, codes::KICKED);
            }
        }
    }

    /// The session is open: the client is welcomed and its avatars listed.
    fn on_opened(&mut self, session: u64, account: AccountId) {
        if let Some(agent) = self.agents.get_mut(&session) {
            agent.phase = SessionPhase::Open;
        }
        bump(&self.stats.sessions_opened);
        self.tell(
            session,
            &ServerMsg::Welcome {
                account,
                session: SessionId(session),
            },
        );
        self.to_coordinator(&LinkMsg::ListAvatars {
            session: SessionId(session),
        });
    }

    /// The session's avatar is in its scene as `net_id`.
    /// The route (which comes first) gives the placement epoch the client's
    /// view is bound to. An attach the scene already had (a replay after a
    /// coordinator restart: same avatar, placement and id) is not told
    /// again: `Entered` starts the client's view afresh, while the scene
    /// goes on replicating from what it already sent, so the client would
    /// miss every entity it had.
    fn on_attached(&mut self, session: u64, avatar: u64, scene: String, net_id: u32) {
        let mut epoch = 0;
        if let Some(agent) = self.agents.get_mut(&session) {
            agent.replaying_attach = false;
            let had = agent.avatar.replace(avatar) == Some(avatar);
            if let Some(r) = agent.route.as_mut().filter(|r| r.scene == scene) {
                epoch = r.epoch;
                let same_id = r.net_id.replace(net_id) == Some(net_id);
                if had && same_id {
                    debug!(session, avatar, "attach replayed; the client stays in");
                    return;
                }
            }
        }
        self.tell(
            session,
            &ServerMsg::Entered {
                avatar,
                scene_tag: tessera_proto::state::scene_tag(&scene),
                scene,
                net_id,
                epoch,
            },
        );
    }

    /// The session's avatar left its scene: no route, no avatar.
    fn on_detached(&mut self, session: u64, avatar: u64) {
        if let Some(agent) = self.agents.get_mut(&session) {
            agent.route = None;
            agent.avatar = None;
        }
        self.tell(session, &ServerMsg::Left { avatar });
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
