//! Channels: named groups of avatars that games make (a party, a guild),
//! held here so that they span scenes. Scenes send their games' asks
//! ([`LinkMsg::ChannelOps`]); members say lines on their channels
//! ([`ChatTarget::Channel`](tessera_wire::ChatTarget::Channel), checked in
//! `chat.rs`). A message goes to every online member, wherever it is, as
//! one message per gate link, like chat; offline members are skipped.
//!
//! Membership is by avatar, so it survives portals and reconnects; it ends
//! when the avatar is removed or the channel disbanded. Channels live in
//! memory only: a coordinator restart loses them (games make them again).

use std::collections::{BTreeMap, BTreeSet};

use tessera_cluster::{AvatarPresence, SessionId};
use tessera_sim::channels::{
    MAX_CHANNEL_BYTES, MAX_CHANNEL_NAME, MAX_CHANNEL_TEXT, MAX_RECIPIENTS,
};
use tessera_sim::protocol::AvatarId;
use tessera_wire::{ChatScope, Epoch, LinkMsg, Role, WireChannelOp, WirePayload};
use tracing::debug;

use super::Core;
use super::messages::Origin;
use crate::config::ChannelLimits;

/// Why a channel ask or line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChannelRefusal {
    #[error("too many channels")]
    TooManyChannels,
    #[error("the channel is full")]
    ChannelFull,
    #[error("the avatar is in too many channels")]
    TooManyForAvatar,
    #[error("no such channel")]
    NoSuchChannel,
    #[error("a name, message or recipient list out of bounds")]
    OutOfBounds,
}

/// The channels and their members, within [`ChannelLimits`].
#[derive(Debug, Default)]
pub(crate) struct ChannelTable {
    limits: ChannelLimits,
    channels: BTreeMap<String, BTreeSet<AvatarId>>,
    /// How many channels each member belongs to.
    per_avatar: BTreeMap<AvatarId, u32>,
}

impl ChannelTable {
    pub(crate) fn new(limits: ChannelLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Creates `name` unless it exists.
    pub(crate) fn create(&mut self, name: &str) -> Result<(), ChannelRefusal> {
        if !name_fits(name) {
            return Err(ChannelRefusal::OutOfBounds);
        }
        if self.channels.contains_key(name) {
            return Ok(());
        }
        if self.channels.len() >= self.limits.max_channels as usize {
            return Err(ChannelRefusal::TooManyChannels);
        }
        self.channels.insert(name.to_owned(), BTreeSet::new());
        Ok(())
    }

    /// Makes `avatar` a member of `name` (nothing happens if it is one).
    pub(crate) fn add(&mut self, name: &str, avatar: AvatarId) -> Result<(), ChannelRefusal> {
        let Some(members) = self.channels.get_mut(name) else {
            return Err(ChannelRefusal::NoSuchChannel);
        };
        if members.contains(&avatar) {
            return Ok(());
        }
        if members.len() >= self.limits.max_members as usize {
            return Err(ChannelRefusal::ChannelFull);
        }
        let count = self.per_avatar.entry(avatar).or_default();
        if *count >= self.limits.max_per_avatar {
            return Err(ChannelRefusal::TooManyForAvatar);
        }
        *count += 1;
        members.insert(avatar);
        Ok(())
    }

    pub(crate) fn remove(&mut self, name: &str, avatar: AvatarId) -> Result<(), ChannelRefusal> {
        let Some(members) = self.channels.get_mut(name) else {
            return Err(ChannelRefusal::NoSuchChannel);
        };
        if members.remove(&avatar) {
            self.forget_one(avatar);
        }
        Ok(())
    }

    /// Ends `name` and every membership in it.
    pub(crate) fn disband(&mut self, name: &str) -> Result<(), ChannelRefusal> {
        let Some(members) = self.channels.remove(name) else {
            return Err(ChannelRefusal::NoSuchChannel);
        };
        for avatar in members {
            self.forget_one(avatar);
        }
        Ok(())
    }

    pub(crate) fn members(&self, name: &str) -> Option<&BTreeSet<AvatarId>> {
        self.channels.get(name)
    }

    pub(crate) fn is_member(&self, name: &str, avatar: AvatarId) -> bool {
        self.channels.get(name).is_some_and(|m| m.contains(&avatar))
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    /// Memberships in all.
    pub(crate) fn memberships(&self) -> u64 {
        self.per_avatar.values().map(|&n| u64::from(n)).sum()
    }

    fn forget_one(&mut self, avatar: AvatarId) {
        if let Some(n) = self.per_avatar.get_mut(&avatar) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_avatar.remove(&avatar);
            }
        }
    }
}

/// How much of a channel name a refusal repeats to the client.
pub(super) const SHOWN_NAME: usize = MAX_CHANNEL_NAME;

pub(crate) fn name_fits(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_NAME
}

fn payload_fits(p: &WirePayload) -> bool {
    match p {
        WirePayload::Text(t) => !t.is_empty() && t.len() <= MAX_CHANNEL_TEXT,
        WirePayload::Bytes(b) => !b.is_empty() && b.len() <= MAX_CHANNEL_BYTES,
    }
}

impl Core {
    /// A tick's channel asks from `scene`'s host, applied in order. Asks
    /// from a placement that is no longer current are ignored, like its
    /// events.
    pub(super) fn on_channel_ops(
        &mut self,
        from: Origin,
        scene: &str,
        epoch: Epoch,
        ops: Vec<WireChannelOp>,
    ) {
        let Some(node) = from.node.filter(|_| from.role == Role::SceneServer) else {
            return self.refuse(
                from.link,
                "only a registered scene server sends channel asks",
            );
        };
        if self.cluster.placement(scene) != Some((node, epoch)) {
            self.stats.events_stale += 1;
            debug!(%scene, epoch, "channel asks from a stale placement ignored");
            return;
        }
        for op in ops {
            self.stats.channel_ops += 1;
            if let Err(e) = self.channel_op(op) {
                self.stats.channel_ops_refused += 1;
                debug!(%scene, "channel ask refused: {e}");
            }
        }
    }

    fn channel_op(&mut self, op: WireChannelOp) -> Result<(), ChannelRefusal> {
        match op {
            WireChannelOp::Create { channel } => self.channels.create(&channel),
            WireChannelOp::Add { channel, avatar } => self.channels.add(&channel, avatar),
            WireChannelOp::Remove { channel, avatar } => self.channels.remove(&channel, avatar),
            WireChannelOp::Disband { channel } => self.channels.disband(&channel),
            WireChannelOp::Send { channel, payload } => {
                if !payload_fits(&payload) {
                    return Err(ChannelRefusal::OutOfBounds);
                }
                let Some(members) = self.channels.members(&channel) else {
                    return Err(ChannelRefusal::NoSuchChannel);
                };
                let members: Vec<AvatarId> = members.iter().copied().collect();
                self.stats.channel_messages += 1;
                let sessions = self.online_sessions(&members);
                match payload {
                    WirePayload::Text(text) => {
                        self.deliver_chat(sessions, "", ChatScope::Channel(channel), &text)
                    }
                    WirePayload::Bytes(data) => self.deliver_data(sessions, Some(channel), data),
                }
                Ok(())
            }
            WireChannelOp::SendTo { avatars, payload } => {
                if avatars.is_empty() || avatars.len() > MAX_RECIPIENTS || !payload_fits(&payload) {
                    return Err(ChannelRefusal::OutOfBounds);
                }
                let mut avatars = avatars;
                avatars.sort_unstable();
                avatars.dedup();
                self.stats.channel_messages += 1;
                let sessions = self.online_sessions(&avatars);
                match payload {
                    WirePayload::Text(text) => {
                        self.deliver_chat(sessions, "", ChatScope::Game, &text)
                    }
                    WirePayload::Bytes(data) => self.deliver_data(sessions, None, data),
                }
                Ok(())
            }
        }
    }

    /// The sessions of those of `avatars` online now; the others are
    /// counted as skipped.
    pub(super) fn online_sessions(&mut self, avatars: &[AvatarId]) -> Vec<SessionId> {
        let mut sessions = Vec::with_capacity(avatars.len());
        for &a in avatars {
            match self.cluster.avatar(a).map(|v| v.presence) {
                Some(AvatarPresence::Online { session }) => sessions.push(session),
                _ => self.stats.channel_offline_skipped += 1,
            }
        }
        sessions
    }

    /// Sends the game's bytes to `targets`: one message per gate link.
    fn deliver_data(&mut self, targets: Vec<SessionId>, channel: Option<String>, data: Vec<u8>) {
        for (link, sessions) in self.by_link(targets) {
            self.send_link(
                link,
                &LinkMsg::GameDataTo {
                    sessions,
                    channel: channel.clone(),
                    data: data.clone(),
                },
            );
        }
    }

    /// `targets` grouped by the link that carries each.
    pub(super) fn by_link(&self, targets: Vec<SessionId>) -> BTreeMap<u64, Vec<SessionId>> {
        let mut by_link: BTreeMap<u64, Vec<SessionId>> = BTreeMap::new();
        for s in targets {
            if let Some(&link) = self.sessions.get(&s) {
                by_link.entry(link).or_default().push(s);
            }
        }
        by_link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_channels: u32, max_members: u32, max_per_avatar: u32) -> ChannelTable {
        ChannelTable::new(ChannelLimits {
            max_channels,
            max_members,
            max_per_avatar,
        })
    }

    #[test]
    fn channels_are_bounded_in_number_members_and_per_avatar() {
        let mut t = table(2, 2, 1);
        assert_eq!(t.create("a"), Ok(()));
        assert_eq!(t.create("a"), Ok(()), "creating again is a no-op");
        assert_eq!(t.create("b"), Ok(()));
        assert_eq!(t.create("c"), Err(ChannelRefusal::TooManyChannels));
        assert_eq!(t.create(""), Err(ChannelRefusal::OutOfBounds));
        assert_eq!(
            t.create(&"x".repeat(MAX_CHANNEL_NAME + 1)),
            Err(ChannelRefusal::OutOfBounds)
        );

        assert_eq!(t.add("a", 1), Ok(()));
        assert_eq!(t.add("a", 1), Ok(()), "already a member");
        assert_eq!(t.add("a", 2), Ok(()));
        assert_eq!(t.add("a", 3), Err(ChannelRefusal::ChannelFull));
        assert_eq!(t.add("b", 1), Err(ChannelRefusal::TooManyForAvatar));
        assert_eq!(t.add("nope", 4), Err(ChannelRefusal::NoSuchChannel));
        assert_eq!(t.memberships(), 2);

        // Leaving frees the avatar's slot; disbanding frees every member's
        // and the channel's.
        assert_eq!(t.remove("a", 1), Ok(()));
        assert!(!t.is_member("a", 1));
        assert_eq!(t.add("b", 1), Ok(()));
        assert_eq!(t.disband("b"), Ok(()));
        assert_eq!(t.disband("b"), Err(ChannelRefusal::NoSuchChannel));
        assert_eq!(t.len(), 1);
        assert_eq!(t.memberships(), 1, "only 2 in a");
        assert_eq!(t.create("c"), Ok(()));
        assert_eq!(t.add("c", 1), Ok(()));
        assert!(t.is_member("c", 1) && t.is_member("a", 2));
    }

    #[test]
    fn messages_out_of_bounds_do_not_fit() {
        assert!(payload_fits(&WirePayload::Text("hi".into())));
        assert!(!payload_fits(&WirePayload::Text(String::new())));
        assert!(!payload_fits(&WirePayload::Text(
            "x".repeat(MAX_CHANNEL_TEXT + 1)
        )));
        assert!(!payload_fits(&WirePayload::Bytes(vec![
            0;
            MAX_CHANNEL_BYTES
                + 1
        ])));
    }
}
