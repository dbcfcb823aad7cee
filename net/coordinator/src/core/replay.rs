//! A gate's sessions across a new link. A gate whose link dropped replays
//! its open sessions on the next one (`OpenSession` with a zero nonce); a
//! gate that restarted has none to replay. So the sessions the directory
//! holds for a gate that registers again wait for their replay, and those
//! not replayed within the heartbeat timeout end (their avatars detach):
//! otherwise a gate killed and restarted faster than its heartbeat timeout
//! would leave its players online for ever. A replay the coordinator
//! refuses kicks the client with the reason, so that no client stays
//! connected to a gate with a session the cluster does not know.

use tessera_cluster::{NodeId, SessionId};
use tessera_wire::{LinkMsg, SessionEvent};
use tracing::{info, warn};

use super::Core;

impl Core {
    /// Gate `node` registered on `link`: its sessions opened on another
    /// link must be replayed on this one within the heartbeat timeout.
    pub(super) fn expect_replay(&mut self, node: NodeId, link: u64) {
        let deadline = self
            .now()
            .saturating_add(self.cluster.config().heartbeat_timeout_ms);
        let waiting: Vec<SessionId> = self
            .cluster
            .gate_sessions(node)
            .filter(|s| self.sessions.get(s) != Some(&link))
            .collect();
        for session in waiting {
            self.awaiting_replay.insert(session, (node, deadline));
        }
    }

    /// `session` was replayed: it stays.
    pub(super) fn replayed(&mut self, session: SessionId) {
        self.awaiting_replay.remove(&session);
    }

    /// Ends the sessions whose replay did not come in time. The gate is
    /// told to kick the client, in case it has it after all (a replay lost
    /// on a full queue).
    pub(super) fn expire_replays(&mut self, now: u64) {
        let expired: Vec<(SessionId, NodeId)> = self
            .awaiting_replay
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(&s, &(node, _))| (s, node))
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
    /// `link` kicks the client with it, and the session is forgotten here.
    pub(super) fn kick_replay(&mut self, link: u64, session: SessionId, reason: &str) {
        self.stats.refused += 1;
        self.stats.replays_refused += 1;
        warn!(?session, %reason, "session replay refused; the client is kicked");
        self.awaiting_replay.remove(&session);
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
