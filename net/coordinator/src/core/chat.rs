//! Chat: a line from a session's avatar to its scene, to everyone, to one
//! avatar by name, or to a channel it is a member of (`channels.rs`),
//! delivered as one message per gate link.

use tessera_cluster::{AvatarPresence, SessionId};
use tessera_proto::client::MAX_CHAT_BYTES;
use tessera_sim::protocol::AvatarId;
use tessera_wire::{ChatScope, ChatTarget, LinkMsg};

use super::Core;
use super::messages::Origin;

impl Core {
    /// A chat line from the session's avatar.
    pub(super) fn on_chat(
        &mut self,
        from: Origin,
        session: SessionId,
        to: ChatTarget,
        text: String,
    ) {
        if !self.owns_session(from, session) {
            return;
        }
        if text.len() > MAX_CHAT_BYTES || text.is_empty() {
            return self.refuse_session_by(session, "chat text empty or too long".into());
        }
        let Some(avatar) = self.cluster.session_avatar(session) else {
            return self.refuse_session_by(session, "enter the world to chat".into());
        };
        let speaker = self.avatar_name(avatar);
        let (targets, scope) = match self.chat_targets(avatar, to) {
            Ok(targets) => targets,
            Err(reason) => return self.refuse_session_by(session, reason),
        };
        if matches!(scope, ChatScope::Channel(_)) {
            self.stats.channel_messages += 1;
        }
        self.stats.chat_lines += 1;
        self.deliver_chat(targets, &speaker, scope, &text);
    }

    /// The sessions a line of `avatar` goes to, or why there are none.
    fn chat_targets(
        &mut self,
        avatar: AvatarId,
        to: ChatTarget,
    ) -> Result<(Vec<SessionId>, ChatScope), String> {
        match to {
            ChatTarget::Scene => {
                let scene = self.cluster.avatar(avatar).map(|a| a.scene);
                Ok((self.online_in(scene.as_deref()), ChatScope::Scene))
            }
            ChatTarget::Global => Ok((self.online_in(None), ChatScope::Global)),
            ChatTarget::Whisper(name) => {
                let target = self.looked.whisper.flatten();
                let to_session = target.and_then(|t| match self.cluster.avatar(t)?.presence {
                    AvatarPresence::Online { session } => Some(session),
                    _ => None,
                });
                match to_session {
                    Some(s) => Ok((vec![s], ChatScope::Whisper)),
                    None => Err(format!("{name} is not online")),
                }
            }
            ChatTarget::Channel(name) => {
                if !self.channels.is_member(&name, avatar) {
                    self.stats.channel_lines_refused += 1;
                    let shown: String = name.chars().take(super::channels::SHOWN_NAME).collect();
                    return Err(format!("you are not a member of channel {shown:?}"));
                }
                let members: Vec<AvatarId> = self
                    .channels
                    .members(&name)
                    .map(|m| m.iter().copied().collect())
                    .unwrap_or_default();
                let sessions = self.online_sessions(&members);
                Ok((sessions, ChatScope::Channel(name)))
            }
        }
    }

    /// The sessions of the avatars online in `scene` (everywhere if `None`).
    fn online_in(&self, scene: Option<&str>) -> Vec<SessionId> {
        self.cluster
            .avatars()
            .filter(|a| scene.is_none_or(|s| a.scene == s))
            .filter_map(|a| match a.presence {
                AvatarPresence::Online { session } => Some(session),
                _ => None,
            })
            .collect()
    }

    /// Sends the line to `targets`: one message per gate link.
    pub(super) fn deliver_chat(
        &mut self,
        targets: Vec<SessionId>,
        from: &str,
        scope: ChatScope,
        text: &str,
    ) {
        for (link, sessions) in self.by_link(targets) {
            self.send_link(
                link,
                &LinkMsg::ChatTo {
                    sessions,
                    from: from.to_owned(),
                    scope: scope.clone(),
                    text: text.to_owned(),
                },
            );
        }
    }

    /// An avatar's name: learned at attach, or read by the link task
    /// (`lookups.rs`) the first time it speaks.
    fn avatar_name(&mut self, avatar: AvatarId) -> String {
        if let Some(n) = self.avatar_names.get(&avatar) {
            return n.clone();
        }
        let name = match self.looked.speaker.take() {
            Some((a, name)) if a == avatar => name,
            _ => return format!("#{avatar}"),
        };
        self.avatar_names.insert(avatar, name.clone());
        name
    }
}
