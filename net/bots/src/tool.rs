//! A **tool client** of the cluster: what tests, benches and operator tools
//! use to open sessions, attach and detach avatars and send inputs — the
//! same link messages a gate sends, without UDP clients behind them.
//!
//! * [`SessionClient`] talks to the coordinator: `OpenSession`,
//!   `AttachAvatar`, `DetachAvatar`, `CloseSession`, and waits for the
//!   [`SessionEvent`]s answering them.
//! * [`SceneClient`] talks to a scene server: inputs in, replication out.
//!
//! Both wait with deadlines and never panic on what they receive.

use std::collections::VecDeque;
use std::time::Duration;

use tessera_proto::{AccountId, SessionId};
use tessera_sim::protocol::{AvatarId, NetId};

use tessera_link::{ConnectError, Link, LinkConfig, connect};
use tessera_wire::{
    ChatScope, ChatTarget, Epoch, Input, LinkMsg, Role, SceneCommand, Secret, SessionEvent,
};

/// Why a tool request failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the link closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("kicked: {0}")]
    Kicked(String),
}

/// Where an attached avatar lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub avatar: AvatarId,
    pub scene: String,
    pub epoch: Epoch,
    /// The hosting scene server's node name and link address.
    pub server: String,
    pub addr: String,
    pub net_id: NetId,
}

/// A session-level link to the coordinator. See the [module docs](self).
#[derive(Debug)]
pub struct SessionClient {
    link: Link,
    next_request: u64,
    /// Events read while waiting for another one, oldest first (bounded).
    backlog: VecDeque<(SessionId, SessionEvent)>,
    /// Chat lines for this tool's sessions, oldest first (bounded like the
    /// backlog).
    chats: VecDeque<ChatLine>,
    timeout: Duration,
}

/// A chat line the coordinator delivered to sessions of a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub sessions: Vec<SessionId>,
    pub from: String,
    pub scope: ChatScope,
    pub text: String,
}

/// Events kept for [`SessionClient::next_event`] while waiting for others.
const BACKLOG: usize = 4096;

impl SessionClient {
    /// Connects to the coordinator at `addr` as tool `name`.
    pub async fn connect(addr: &str, name: &str, secret: Secret) -> Result<Self, ToolError> {
        let cfg = LinkConfig::new(Role::Tool, name, secret);
        let link = connect(addr, &cfg).await?;
        Ok(Self {
            link,
            next_request: 1,
            backlog: VecDeque::new(),
            chats: VecDeque::new(),
            timeout: Duration::from_secs(10),
        })
    }

    /// How long each request waits for its answer (default 10 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    async fn send(&self, msg: &LinkMsg) -> Result<(), ToolError> {
        self.link.send(msg).await.map_err(|_| ToolError::Closed)
    }

    /// The next session event (from the backlog first), waiting up to `timeout`.
    pub async fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Result<(SessionId, SessionEvent), ToolError> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(e);
        }
        self.read(timeout).await
    }

    async fn read(&mut self, timeout: Duration) -> Result<(SessionId, SessionEvent), ToolError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.link.recv())
                .await
                .map_err(|_| ToolError::Timeout(timeout))?
                .ok_or(ToolError::Closed)?;
            match msg {
                LinkMsg::Session { session, event } => return Ok((session, event)),
                LinkMsg::Refused { reason } => return Err(ToolError::Refused(reason)),
                LinkMsg::ChatTo {
                    sessions,
                    from,
                    scope,
                    text,
                } if self.chats.len() < BACKLOG => self.chats.push_back(ChatLine {
                    sessions,
                    from,
                    scope,
                    text,
                }),
                _ => {}
            }
        }
    }

    /// Waits for an event of `session` that `pick` accepts; events of other
    /// sessions are kept for later. A refusal or kick of `session` is an error.
    async fn wait<T>(
        &mut self,
        session: SessionId,
        mut pick: impl FnMut(&SessionEvent) -> Option<T>,
    ) -> Result<T, ToolError> {
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (s, ev) = self.read(left).await?;
            if s == session {
                if let Some(t) = pick(&ev) {
                    return Ok(t);
                }
                match ev {
                    SessionEvent::Refused { reason, .. } => return Err(ToolError::Refused(reason)),
                    SessionEvent::Kicked { reason } => return Err(ToolError::Kicked(reason)),
                    _ => {}
                }
            } else if self.backlog.len() < BACKLOG {
                self.backlog.push_back((s, ev));
            }
        }
    }

    /// Says `text` to `to` as `session` (chat, as a client's gate sends it).
    pub async fn chat(
        &self,
        session: SessionId,
        to: ChatTarget,
        text: &str,
    ) -> Result<(), ToolError> {
        self.send(&LinkMsg::Chat {
            session,
            to,
            text: text.to_owned(),
        })
        .await
    }

    /// The next chat line for this tool's sessions, waiting up to `timeout`
    /// (session events read meanwhile are kept for [`Self::next_event`]).
    pub async fn next_chat(&mut self, timeout: Duration) -> Result<ChatLine, ToolError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.chats.pop_front() {
                return Ok(c);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Ok(e) if self.backlog.len() < BACKLOG => self.backlog.push_back(e),
                Ok(_) => {}
                Err(ToolError::Timeout(_)) if !self.chats.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a session for `account`; returns the session id.
    pub async fn open_session(&mut self, account: AccountId) -> Result<SessionId, ToolError> {
        let request = self.next_request;
        self.next_request += 1;
        self.send(&LinkMsg::OpenSession {
            request,
            account,
            client: SessionId(0),
            nonce: [0; 16],
        })
        .await?;
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (session, ev) = self.read(left).await?;
            match ev {
                SessionEvent::Opened { request: r, .. } if r == request => return Ok(session),
                SessionEvent::Refused { request: r, reason } if r == request => {
                    return Err(ToolError::Refused(reason));
                }
                ev if self.backlog.len() < BACKLOG => self.backlog.push_back((session, ev)),
                _ => {}
            }
        }
    }

    /// Attaches `avatar` for `session`; returns once the scene spawned it.
    pub async fn attach(
        &mut self,
        session: SessionId,
        avatar: AvatarId,
    ) -> Result<Attachment, ToolError> {
        self.send(&LinkMsg::AttachAvatar { session, avatar })
            .await?;
        self.wait_attached(session).await
    }

    /// Waits for the next `Routed` + `Attached` pair of `session` (e.g. the
    /// re-attach after a failover or a portal).
    pub async fn wait_attached(&mut self, session: SessionId) -> Result<Attachment, ToolError> {
        let mut routed: Option<Attachment> = None;
        loop {
            let ev = self
                .wait(session, |ev| match ev {
                    SessionEvent::Routed { .. } | SessionEvent::Attached { .. } => Some(ev.clone()),
                    _ => None,
                })
                .await?;
            match ev {
                SessionEvent::Routed {
                    avatar,
                    scene,
                    epoch,
                    server,
                    addr,
                } => {
                    routed = Some(Attachment {
                        avatar,
                        scene,
                        epoch,
                        server,
                        addr,
                        net_id: 0,
                    });
                }
                SessionEvent::Attached { net_id, scene, .. } => {
                    if let Some(mut a) = routed.take()
                        && a.scene == scene
                    {
                        a.net_id = net_id;
                        return Ok(a);
                    }
                }
                _ => {}
            }
        }
    }

    /// Detaches the session's avatar; returns once the scene saved it.
    pub async fn detach(&mut self, session: SessionId) -> Result<(), ToolError> {
        self.send(&LinkMsg::DetachAvatar { session }).await?;
        self.wait(session, |ev| {
            matches!(ev, SessionEvent::Detached { .. }).then_some(())
        })
        .await
    }

    /// Ends `session` (its avatar is detached, offline in its scene).
    pub async fn close_session(&mut self, session: SessionId) -> Result<(), ToolError> {
        self.send(&LinkMsg::CloseSession { session }).await
    }
}

/// A link to one scene server, as a gate would hold it.
#[derive(Debug)]
pub struct SceneClient {
    link: Link,
    /// Packets of a batch not returned yet.
    pending: VecDeque<(u64, Vec<u8>)>,
}

impl SceneClient {
    /// Connects to a scene server's link address as `name` — the same name
    /// the [`SessionClient`] used, so replication is routed here.
    pub async fn connect(addr: &str, name: &str, secret: Secret) -> Result<Self, ToolError> {
        let cfg = LinkConfig::new(Role::Tool, name, secret);
        Ok(Self {
            link: connect(addr, &cfg).await?,
            pending: VecDeque::new(),
        })
    }

    /// Sends one input for `client` in `scene` at placement `epoch`.
    pub async fn input(
        &self,
        scene: &str,
        epoch: Epoch,
        client: u64,
        input: Input,
    ) -> Result<(), ToolError> {
        self.link
            .send(&LinkMsg::Command {
                scene: scene.to_owned(),
                epoch,
                command: SceneCommand::Input { client, input },
            })
            .await
            .map_err(|_| ToolError::Closed)
    }

    /// Sends one game action (`kind`: its index in the game's schema) for
    /// `client` in `scene` at placement `epoch`, as a gate forwards one.
    pub async fn action(
        &self,
        scene: &str,
        epoch: Epoch,
        client: u64,
        kind: u16,
        payload: Vec<u8>,
    ) -> Result<(), ToolError> {
        self.link
            .send(&LinkMsg::Inputs {
                scene: scene.to_owned(),
                epoch,
                inputs: vec![(client, tessera_proto::Uplink::Action { kind, payload })],
            })
            .await
            .map_err(|_| ToolError::Closed)
    }

    /// The next replication packet `(client, bytes)`, waiting up to `timeout`.
    pub async fn replication(&mut self, timeout: Duration) -> Result<(u64, Vec<u8>), ToolError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.link.recv())
                .await
                .map_err(|_| ToolError::Timeout(timeout))?
                .ok_or(ToolError::Closed)?;
            match msg {
                LinkMsg::Replication { client, bytes } => return Ok((client, bytes)),
                LinkMsg::ReplicationBatch { packets } => {
                    let mut it = packets.into_iter();
                    if let Some(first) = it.next() {
                        self.pending.extend(it);
                        return Ok(first);
                    }
                }
                _ => {}
            }
        }
    }
}
