//! The session limits applied: a session's requests over its limits go no
//! further than the gate, and a chat line fans out to its recipients as
//! sheddable messages, so a crowd's chat costs lines, never clients.

use std::time::Instant;

use tessera_link::bump;
use tessera_proto::{ServerMsg, SessionId};

use crate::{Channel, GateSendError};

use super::agent::AgentLoop;
use super::limits::{Request, Verdict};

impl AgentLoop {
    /// Whether `client`'s session may make `request` now; a refusal is
    /// counted, and told to the client once until it may ask again.
    pub(super) fn allow(&mut self, client: u64, request: Request) -> bool {
        let Some(agent) = self.agents.get_mut(&client) else {
            return false;
        };
        let verdict = agent
            .limits
            .request(&self.config.limits, request, Instant::now());
        if verdict == Verdict::Allowed {
            return true;
        }
        bump(match request {
            Request::Chat => &self.stats.limited_chat,
            Request::ChannelChat => &self.stats.limited_channel_chat,
            Request::ListAvatars => &self.stats.limited_list_avatars,
            Request::CreateAvatar => &self.stats.limited_create_avatar,
        });
        if verdict == Verdict::RefusedTell {
            self.tell(
                client,
                &ServerMsg::Error {
                    code: "rate_limited".into(),
                    text: request.refusal().into(),
                },
            );
        }
        false
    }

    /// A chat line for `sessions`, offered to those still here: shed
    /// (counted) past a recipient's `chat_received_per_s`, or when its
    /// listener's queue is half full (see [`Gate::offer`](crate::Gate::offer));
    /// the listener sheds it too if the client's channel is half full.
    pub(super) fn on_chat_to(&mut self, sessions: Vec<SessionId>, chat: &ServerMsg) {
        let bytes = bytes::Bytes::from(chat.encode());
        let now = Instant::now();
        for SessionId(s) in sessions {
            let Some(agent) = self.agents.get_mut(&s) else {
                continue;
            };
            if !agent.limits.receive_chat(&self.config.limits, now) {
                bump(&self.stats.chat_shed_recipient_rate);
                continue;
            }
            match self.gate.offer(s, Channel::Reliable, bytes.clone()) {
                Ok(()) => bump(&self.stats.chat_delivered),
                Err(GateSendError::QueueFull) => bump(&self.stats.chat_shed_queue_full),
                Err(GateSendError::UnknownClient | GateSendError::Closed) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
