//! A gate's sessions across a new link. A gate whose link dropped replays
//! its open sessions on the next one (`OpenSession` with a zero nonce); a
//! gate that restarted has none to replay. So the sessions the directory
//! holds for a gate that registers again wait for their replay; once the
//! gate has replayed nothing for the heartbeat timeout, those still
//! waiting end (their avatars detach). Otherwise a gate killed and
//! restarted faster than its heartbeat timeout would leave its players
//! online for ever. A replay the coordinator refuses kicks the client with
//! the reason, so that no client stays connected to a gate with a session
//! the cluster does not know.

use tessera_cluster::{NodeId, SessionId};
use tessera_wire::{LinkMsg, SessionEvent};
use tracing::{info, warn};

use super::Core;

impl Core {
    /// Gate `node` registered on `link`: its sessions opened on another
    /// link must be replayed on this one. They end once the gate has
    /// replayed nothing for the heartbeat timeout (a gate with many
    /// sessions replays them as fast as its link takes them).
    pub(super) fn expect_replay(&mut self, node: NodeId, link: u64) {
        let waiting: Vec<SessionId> = self
            .cluster
            .gate_sessions(node)
            .filter(|s| self.sessions.get(s) != Some(&link))
            .collect();
        if waiting.is_empty() {
            return;
        }
        for session in waiting {
            self.awaiting_replay.insert(session, node);
        }
        self.extend_replay(node);
    }

    /// Gate `node`'s replay goes on: its deadline moves.
    fn extend_replay(&mut self, node: NodeId) {
        let deadline = self
            .now()
            .saturating_add(self.cluster.config().heartbeat_timeout_ms);
        self.replay_deadlines.insert(node, deadline);
    }

    /// `session` was replayed: it stays.
    pub(super) fn replayed(&mut self, session: SessionId) {
        if let Some(node) = self.awaiting_replay.remove(&session) {
            self.extend_replay(node);
        }
    }

    /// Ends the sessions of each gate that stopped replaying before it
    /// replayed them. The gate is told to kick them, in case it has them
    /// after all (a replay lost with its link).
    pub(super) fn expire_replays(&mut self, now: u64) {
        let late: Vec<NodeId> = self
            .replay_deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(&node, _)| node)
            .collect();
        if late.is_empty() {
            return;
        }
        for node in &late {
            self.replay_deadlines.remove(node);
        }
        let expired: Vec<(SessionId, NodeId)> = self
            .awaiting_replay
            .iter()
            .filter(|(_, node)| late.contains(node))
            .map(|(&s, &node)| (s, node))
            .collect();
        for (session, node) in expired {
            self.awaiting_replay.remove(&session);
            // Ended meanwhile (logout, a new login, the gate lost), or
            // carried by another gate now: nothing to do.
            if self.cluster.session_gate(session) != Some(node) {
                continue;
            }
            self.stats.replays_missed += 1;
            info!(?session, %node, "session not replayed by its gate; ended");
            if let Some(&link) = self.node_links.get(&node) {
                self.send_link(
                    link,
                    &LinkMsg::Session {
                        session,
                        event: SessionEvent::Kicked {
                            reason: "session lost in a gate restart: log in again".into(),
                        },
                    },
                );
            }
            self.close_session(session);
        }
    }

    /// A gate's replay of `session` is refused for `reason`: the gate on
    /// `link` kicks the client with it. (Nothing of the session is kept
    /// here: a session the directory holds under that id is another's.)
    pub(super) fn kick_replay(&mut self, link: u64, session: SessionId, reason: &str) {
        self.stats.refused += 1;
        self.stats.replays_refused += 1;
        warn!(?session, %reason, "session replay refused; the client is kicked");
        self.send_link(
            link,
            &LinkMsg::Session {
                session,
                event: SessionEvent::Kicked {
                    reason: format!("could not resume the session: {reason}"),
                },
            },
        );
    }

    /// Forgets the links of sessions the directory ended (a gate declared
    /// down ends all of its sessions), so that a replay of one is refused
    /// as unknown rather than as "in use".
    pub(super) fn forget_ended_sessions(&mut self) {
        let cluster = &self.cluster;
        self.sessions
            .retain(|&s, _| cluster.session_account(s).is_some());
        self.awaiting_replay
            .retain(|&s, _| cluster.session_account(s).is_some());
    }
}
