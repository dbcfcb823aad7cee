//! The agent loop: one task owns every session's [`Agent`] and handles
//! the transport's events, the clients' messages and the timers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_link::{LinkConfig, LinkSender, bump};
use tessera_proto::{AccountId, ChatTarget, ClientMsg, ServerMsg, SessionId, Uplink};
use tessera_wire::{Epoch, LinkMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::token::TokenClaims;
use crate::{Channel, DisconnectReason, Gate, GateEvent, GateSendError};

use super::limits::{Request, SessionLimits};
use super::routes::{INPUT_FLUSH, InputBatches, SceneLink};
use super::{GateServerConfig, GateServerError, GateServerStats, Inbox, codes};

/// Where a client's session is: the gate asked the coordinator to open it
/// (`OpenSession`) and waits, or the coordinator opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionPhase {
    /// Waiting for `Opened`; the client's messages get `not_ready`, and it
    /// is kicked if this lasts past `open_timeout_ms`.
    Opening,
    /// Opened: the client's messages are handled, and the session is
    /// replayed if the coordinator link comes back.
    Open,
}

/// The scene server a session's inputs go to (from `Routed`).
#[derive(Debug)]
pub(super) struct Route {
    pub(super) scene: String,
    pub(super) epoch: Epoch,
    pub(super) server: String,
    /// The avatar's id in that placement, once `Attached` said it.
    pub(super) net_id: Option<u32>,
}

/// The gate's side of one client's session.
#[derive(Debug)]
pub(super) struct Agent {
    pub(super) account: u64,
    /// The avatar attached for this session (replayed after a coordinator restart).
    pub(super) avatar: Option<u64>,
    pub(super) phase: SessionPhase,
    pub(super) connected_at: Instant,
    pub(super) last_heard: Instant,
    pub(super) route: Option<Route>,
    /// What the session may still ask, and be sent, by its limits.
    pub(super) limits: SessionLimits,
    /// A replayed `AttachAvatar` (after a coordinator restart) went, and
    /// neither `Attached` nor a refusal came back yet: a refusal ends the
    /// session, for the client held an avatar it cannot get back.
    pub(super) replaying_attach: bool,
}

impl Agent {
    /// A client just in, whose session the gate asks the coordinator to open.
    pub(super) fn opening(account: u64, limits: &super::GateLimits, now: Instant) -> Self {
        Self {
            account,
            avatar: None,
            phase: SessionPhase::Opening,
            connected_at: now,
            last_heard: now,
            route: None,
            limits: SessionLimits::new(limits, now),
            replaying_attach: false,
        }
    }
}

/// Gate events the agent loop handles per wake before it looks at its other
/// branches (inbox, timers) again, taken with `try_recv`: unlike `recv` it
/// does not spend tokio's cooperative budget, whose exhaustion makes the
/// task yield and wait a whole run-queue round while the event queue fills.
const EVENTS_PER_WAKE: usize = 1024;
/// How often sessions are checked for the open and idle timeouts, and
/// pending kicks carried out.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How long a kicked client's `Kicked` message has to leave before the
/// disconnect.
const KICK_GRACE: Duration = Duration::from_millis(200);
/// How long [`AgentLoop::close_all`] lets the last messages leave.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The one task that owns every session's state (see the
/// [module docs](super)).
pub(super) struct AgentLoop {
    pub(super) config: GateServerConfig,
    pub(super) gate: Arc<Gate>,
    pub(super) stats: Arc<GateServerStats>,
    pub(super) link_cfg: LinkConfig,
    /// Where scene link tasks report, as the coordinator task does.
    pub(super) inbox_tx: mpsc::Sender<Inbox>,
    pub(super) coordinator: Option<LinkSender>,
    pub(super) scenes: BTreeMap<String, SceneLink>,
    /// Scene link tasks started so far (numbers each one).
    pub(super) scene_tasks: u64,
    pub(super) agents: BTreeMap<u64, Agent>,
    /// Clients to disconnect once their `Kicked` message had time to leave.
    pub(super) kicks: Vec<(Instant, u64, u16)>,
    /// The last heartbeat's number.
    pub(super) seq: u64,
    pub(super) inputs: InputBatches,
    /// Sessions still to replay on the coordinator link, each with whether
    /// its `OpenSession` went already (see `replay_sessions`).
    pub(super) replay: VecDeque<(u64, bool)>,
}

/// A timer that, when late, waits a whole period again rather than firing
/// in a burst.
fn timer(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

impl AgentLoop {
    /// Runs until `stop`, the end of the transport's events or of the
    /// inbox, or the coordinator task's end; a coordinator that refused
    /// the gate for good is returned as the error.
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<GateEvent>,
        mut inbox: mpsc::Receiver<Inbox>,
        stop: CancellationToken,
        coordinator: tokio::task::JoinHandle<Result<(), GateServerError>>,
    ) -> Result<(), GateServerError> {
        let mut beat = timer(Duration::from_millis(u64::from(self.config.heartbeat_ms)));
        let mut sweep = timer(SWEEP_INTERVAL);
        let mut flush = timer(INPUT_FLUSH);
        tokio::pin!(coordinator);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = &mut coordinator => {
                    if let Ok(Err(e)) = r {
                        self.close_all().await;
                        return Err(e);
                    }
                    break;
                }
                e = events.recv() => match e {
                    Some(e) => self.on_gate_events(e, &mut events),
                    None => break,
                },
                m = inbox.recv() => match m {
                    Some(m) => self.on_inbox(m),
                    None => break,
                },
                _ = beat.tick() => self.heartbeat(),
                _ = flush.tick(), if !self.inputs.is_empty() => self.flush_inputs(),
                _ = sweep.tick() => self.sweep(),
            }
        }
        self.close_all().await;
        Ok(())
    }

    /// A wake by a gate event: handles it and what else is queued, up to
    /// [`EVENTS_PER_WAKE`].
    fn on_gate_events(&mut self, first: GateEvent, events: &mut mpsc::Receiver<GateEvent>) {
        self.on_gate_event(first);
        for _ in 1..EVENTS_PER_WAKE {
            match events.try_recv() {
                Ok(e) => self.on_gate_event(e),
                Err(_) => break,
            }
        }
    }

    /// Closes every session and stops the transport.
    pub(super) async fn close_all(&mut self) {
        for &client in self.agents.keys() {
            if let Some(c) = &self.coordinator {
                let _ = c.try_send(&LinkMsg::CloseSession {
                    session: SessionId(client),
                });
            }
        }
        self.agents.clear();
        self.gate.stop();
        // Let the CloseSession messages and the disconnects leave.
        tokio::time::sleep(CLOSE_GRACE).await;
    }

    /// Sends a client a message on the reliable channel; a client whose
    /// listener cannot take it is disconnected.
    pub(super) fn tell(&self, client: u64, msg: &ServerMsg) {
        match self.gate.send(client, Channel::Reliable, msg.encode()) {
            // A client that has just gone: nothing to tell.
            Ok(()) | Err(GateSendError::UnknownClient) => {}
            Err(e) => {
                // The session cannot go on without it: disconnect the client
                // (it may log in again with its resume key).
                bump(&self.stats.told_dropped);
                warn!(
                    client,
                    "a reliable message to a client was lost ({e}); disconnecting it"
                );
                let _ = self.gate.disconnect(client, codes::UNAVAILABLE);
            }
        }
    }

    /// Tells a client why it goes, and disconnects it with `code` after
    /// [`KICK_GRACE`] (see [`sweep`](Self::sweep)).
    pub(super) fn kick(&mut self, client: u64, reason: &str, code: u16) {
        self.tell(
            client,
            &ServerMsg::Kicked {
                reason: reason.to_owned(),
            },
        );
        self.kicks.push((Instant::now() + KICK_GRACE, client, code));
    }

    /// Closes and kicks the sessions past a timeout, then disconnects the
    /// kicked clients whose grace is over.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.kick_late_sessions(now);
        self.disconnect_kicked(now);
        self.close_unused_scene_links();
        self.continue_replay();
    }

    /// Sessions still opening past `open_timeout_ms`, or silent past
    /// `idle_timeout_ms`, are closed and their clients kicked.
    fn kick_late_sessions(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let open = Duration::from_millis(self.config.open_timeout_ms);
        let mut late: Vec<(u64, &'static str)> = Vec::new();
        for (&c, a) in &self.agents {
            if a.phase == SessionPhase::Opening && now.duration_since(a.connected_at) > open {
                late.push((c, "session not opened in time"));
            } else if now.duration_since(a.last_heard) > idle {
                late.push((c, "idle"));
            }
        }
        for (c, why) in late {
            bump(&self.stats.idle_kicks);
            self.agents.remove(&c);
            self.to_coordinator(&LinkMsg::CloseSession {
                session: SessionId(c),
            });
            self.kick(c, why, codes::IDLE);
        }
    }

    /// Disconnects the kicked clients whose `Kicked` message had its time.
    fn disconnect_kicked(&mut self, now: Instant) {
        let due: Vec<(u64, u16)> = self
            .kicks
            .iter()
            .filter(|(t, _, _)| *t <= now)
            .map(|(_, c, code)| (*c, *code))
            .collect();
        self.kicks.retain(|(t, _, _)| *t > now);
        for (c, code) in due {
            let _ = self.gate.disconnect(c, code);
        }
    }

    fn on_gate_event(&mut self, e: GateEvent) {
        match e {
            GateEvent::Connected { client, claims, .. } => self.on_connected(client, &claims),
            GateEvent::Message {
                client, payload, ..
            } => self.on_client(client, &payload),
            GateEvent::Disconnected { client, reason } => self.on_disconnected(client, reason),
        }
    }

    /// A client is in: its agent starts opening a session with the
    /// coordinator (which burns the token's nonce). Without a coordinator
    /// there is no session to open: the client is disconnected.
    fn on_connected(&mut self, client: u64, claims: &TokenClaims) {
        bump(&self.stats.clients);
        if self.coordinator.is_none() {
            let _ = self.gate.disconnect(client, codes::UNAVAILABLE);
            return;
        }
        let now = Instant::now();
        self.agents.insert(
            client,
            Agent::opening(claims.account, &self.config.limits, now),
        );
        self.to_coordinator(&LinkMsg::OpenSession {
            request: client,
            account: AccountId(claims.account),
            client: SessionId(client),
            nonce: claims.nonce,
        });
    }

    /// A client is gone: its session closes (the avatar stays in its
    /// scene, offline).
    fn on_disconnected(&mut self, client: u64, reason: DisconnectReason) {
        if self.agents.remove(&client).is_some() {
            self.to_coordinator(&LinkMsg::CloseSession {
                session: SessionId(client),
            });
        }
        if !matches!(
            reason,
            DisconnectReason::ByClient | DisconnectReason::Kicked(_)
        ) {
            debug!(client, ?reason, "client dropped");
        }
    }

    /// A message from a client: one that does not decode ends its session;
    /// while the session opens, it is answered `not_ready`.
    fn on_client(&mut self, client: u64, payload: &[u8]) {
        let Some(agent) = self.agents.get_mut(&client) else {
            return;
        };
        agent.last_heard = Instant::now();
        let phase = agent.phase;
        let Ok(msg) = ClientMsg::decode(payload) else {
            return self.on_malformed(client);
        };
        if phase == SessionPhase::Opening {
            return self.tell(
                client,
                &ServerMsg::Error {
                    code: "not_ready".into(),
                    text: "the session is being opened".into(),
                },
            );
        }
        self.on_client_msg(client, msg);
    }

    fn on_malformed(&mut self, client: u64) {
        bump(&self.stats.malformed);
        self.end_session(client, "malformed message");
    }

    /// A message of an open session: inputs go to its scene server, the
    /// rest to the coordinator as the session's request.
    fn on_client_msg(&mut self, client: u64, msg: ClientMsg) {
        // The session id is the token's (netcode) client id.
        let session = SessionId(client);
        match msg {
            ClientMsg::Input(input) => self.queue_input(client, Uplink::Input(input)),
            ClientMsg::Ack(ack) => self.queue_input(client, Uplink::Ack(ack)),
            ClientMsg::ListAvatars => {
                if self.allow(client, Request::ListAvatars) {
                    self.to_coordinator(&LinkMsg::ListAvatars { session });
                }
            }
            ClientMsg::CreateAvatar { name } => {
                if self.allow(client, Request::CreateAvatar) {
                    self.to_coordinator(&LinkMsg::CreateAvatar { session, name });
                }
            }
            ClientMsg::Select { avatar } => {
                // The client asked: its `Entered` is told even for the
                // avatar it has (see `on_attached`).
                if let Some(r) = self.agents.get_mut(&client).and_then(|a| a.route.as_mut()) {
                    r.net_id = None;
                }
                self.to_coordinator(&LinkMsg::AttachAvatar { session, avatar });
            }
            ClientMsg::Chat { to, text } => {
                // A channel line takes a token of its own bucket too.
                let channel = matches!(to, ChatTarget::Channel(_));
                if self.allow(client, Request::Chat)
                    && (!channel || self.allow(client, Request::ChannelChat))
                {
                    self.to_coordinator(&LinkMsg::Chat { session, to, text });
                }
            }
            ClientMsg::Leave => self.to_coordinator(&LinkMsg::DetachAvatar { session }),
            ClientMsg::Action { kind, payload } => self.on_action(client, kind, payload),
        }
    }

    /// A game action: one of a kind the game does not have, or of another
    /// size than its kind's, ends the session; one over its kind's rate is
    /// dropped (counted); the rest go to the scene with the inputs.
    fn on_action(&mut self, client: u64, kind: u16, payload: Vec<u8>) {
        let Some(desc) = self.config.game.actions.get(kind as usize) else {
            bump(&self.stats.actions_malformed);
            return self.end_session(client, &format!("unknown action kind {kind}"));
        };
        if payload.len() != desc.width as usize {
            bump(&self.stats.actions_malformed);
            let why = format!(
                "action {} of {} bytes, not {}",
                desc.name,
                payload.len(),
                desc.width
            );
            return self.end_session(client, &why);
        }
        let now = Instant::now();
        let allowed = self
            .agents
            .get_mut(&client)
            .is_some_and(|a| a.limits.action(kind as usize, desc, now));
        if !allowed {
            bump(&self.stats.actions_limited);
            return;
        }
        bump(&self.stats.actions);
        self.queue_input(client, Uplink::Action { kind, payload });
    }

    /// Ends a client's session for a protocol violation: closed with the
    /// coordinator, the client told why and disconnected.
    pub(super) fn end_session(&mut self, client: u64, reason: &str) {
        if self.agents.remove(&client).is_none() {
            return;
        }
        self.to_coordinator(&LinkMsg::CloseSession {
            session: SessionId(client),
        });
        self.kick(client, reason, codes::PROTOCOL);
    }
}
