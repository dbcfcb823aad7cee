//! The agent loop: one task owns every session's [`Agent`] and handles
//! the transport's events, the clients' messages and the timers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_link::{LinkConfig, LinkSender, bump};
use tessera_proto::{ClientMsg, ServerMsg};
use tessera_wire::{Epoch, LinkMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{Channel, DisconnectReason, Gate, GateEvent, GateSendError};

use super::routes::{INPUT_FLUSH, InputBatches, MAX_INPUT_BATCH, SceneLink};
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
}

/// Gate events the agent loop handles per wake before it looks at its other
/// branches (inbox, timers) again. One event per `select!` made it yield to
/// the runtime every 128 events (tokio's cooperative budget); with 2,000
/// bots on a saturated 2-core host the event queue then reached its
/// three-quarter mark and dropped inputs (about 1–2% in a 60 s run, each a
/// round trip ~100 ms longer); draining a batch per wake, none.
const EVENTS_PER_WAKE: usize = 1024;

pub(super) struct AgentLoop {
    pub(super) config: GateServerConfig,
    pub(super) gate: Arc<Gate>,
    pub(super) stats: Arc<GateServerStats>,
    pub(super) link_cfg: LinkConfig,
    pub(super) inbox_tx: mpsc::Sender<Inbox>,
    pub(super) coordinator: Option<LinkSender>,
    pub(super) scenes: BTreeMap<String, SceneLink>,
    pub(super) agents: BTreeMap<u64, Agent>,
    /// Clients to disconnect once their `Kicked` message had time to leave.
    pub(super) kicks: Vec<(Instant, u64, u16)>,
    pub(super) seq: u64,
    pub(super) inputs: InputBatches,
}

impl AgentLoop {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<GateEvent>,
        mut inbox: mpsc::Receiver<Inbox>,
        stop: CancellationToken,
        coordinator: tokio::task::JoinHandle<Result<(), GateServerError>>,
    ) -> Result<(), GateServerError> {
        let mut beat =
            tokio::time::interval(Duration::from_millis(u64::from(self.config.heartbeat_ms)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(INPUT_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    Some(e) => {
                        self.on_gate_event(e);
                        // Drain what else is queued in this wake: `recv`
                        // spends tokio's cooperative budget (the task yields
                        // every 128 events and waits a whole run-queue round,
                        // tens of ms on a busy host), `try_recv` does not.
                        for _ in 1..EVENTS_PER_WAKE {
                            match events.try_recv() {
                                Ok(e) => self.on_gate_event(e),
                                Err(_) => break,
                            }
                        }
                    }
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

    pub(super) async fn close_all(&mut self) {
        for &client in self.agents.keys() {
            if let Some(c) = &self.coordinator {
                let _ = c.try_send(&LinkMsg::CloseSession { session: client });
            }
        }
        self.agents.clear();
        self.gate.stop();
        // Let the CloseSession messages and the disconnects leave.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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

    pub(super) fn kick(&mut self, client: u64, reason: &str, code: u16) {
        self.tell(
            client,
            &ServerMsg::Kicked {
                reason: reason.to_owned(),
            },
        );
        self.kicks
            .push((Instant::now() + Duration::from_millis(200), client, code));
    }

    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
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
            self.to_coordinator(&LinkMsg::CloseSession { session: c });
            self.kick(c, why, codes::IDLE);
        }
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

    pub(super) fn on_gate_event(&mut self, e: GateEvent) {
        match e {
            GateEvent::Connected { client, claims, .. } => {
                bump(&self.stats.clients);
                if self.coordinator.is_none() {
                    let _ = self.gate.disconnect(client, codes::UNAVAILABLE);
                    return;
                }
                let now = Instant::now();
                self.agents.insert(
                    client,
                    Agent {
                        account: claims.account,
                        avatar: None,
                        phase: SessionPhase::Opening,
                        connected_at: now,
                        last_heard: now,
                        route: None,
                    },
                );
                self.to_coordinator(&LinkMsg::OpenSession {
                    request: client,
                    account: claims.account,
                    client,
                    nonce: claims.nonce,
                });
            }
            GateEvent::Message {
                client, payload, ..
            } => self.on_client(client, &payload),
            GateEvent::Disconnected { client, reason } => {
                if self.agents.remove(&client).is_some() {
                    self.to_coordinator(&LinkMsg::CloseSession { session: client });
                }
                if !matches!(
                    reason,
                    DisconnectReason::ByClient | DisconnectReason::Kicked(_)
                ) {
                    debug!(client, ?reason, "client dropped");
                }
            }
        }
    }

    pub(super) fn on_client(&mut self, client: u64, payload: &[u8]) {
        let Some(agent) = self.agents.get_mut(&client) else {
            return;
        };
        agent.last_heard = Instant::now();
        let msg = match ClientMsg::decode(payload) {
            Ok(m) => m,
            Err(_) => {
                bump(&self.stats.malformed);
                self.agents.remove(&client);
                self.to_coordinator(&LinkMsg::CloseSession { session: client });
                return self.kick(client, "malformed message", codes::PROTOCOL);
            }
        };
        if agent.phase == SessionPhase::Opening {
            return self.tell(
                client,
                &ServerMsg::Error {
                    code: "not_ready".into(),
                    text: "the session is being opened".into(),
                },
            );
        }
        match msg {
            ClientMsg::Input(input) => {
                let Some(route) = &agent.route else {
                    bump(&self.stats.inputs_dropped);
                    return;
                };
                // Gathered per scene server and sent as one `Inputs` frame
                // every INPUT_FLUSH (or sooner when many are waiting).
                let batch = self
                    .inputs
                    .entry(route.server.clone())
                    .or_default()
                    .entry((route.scene.clone(), route.epoch))
                    .or_default();
                batch.push((client, input));
                if batch.len() >= MAX_INPUT_BATCH {
                    self.flush_inputs();
                }
            }
            ClientMsg::ListAvatars => {
                self.to_coordinator(&LinkMsg::ListAvatars { session: client })
            }
            ClientMsg::CreateAvatar { name } => {
                self.to_coordinator(&LinkMsg::CreateAvatar {
                    session: client,
                    name,
                });
            }
            ClientMsg::Select { avatar } => self.to_coordinator(&LinkMsg::AttachAvatar {
                session: client,
                avatar,
            }),
            ClientMsg::Chat { to, text } => self.to_coordinator(&LinkMsg::Chat {
                session: client,
                to,
                text,
            }),
            ClientMsg::Leave => self.to_coordinator(&LinkMsg::DetachAvatar { session: client }),
        }
    }
}
