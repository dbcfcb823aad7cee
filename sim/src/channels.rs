//! Channels: named groups of avatars (a party, a guild) that a game keeps
//! across scenes, and messages to them or to a list of avatars.
//!
//! A game system asks through the [`Channels`] resource; the scene only
//! queues the asks ([`ChannelOp`]s), checked against the bounds here, and
//! hands them to its host in [`TickOutput::channel_ops`](crate::TickOutput)
//! at the end of the tick. The coordinator holds the channels themselves
//! (their members, wherever they are) and delivers messages through the
//! members' gates: membership survives portals and reconnects, and a scene
//! never learns whether an ask succeeded. Pure: nothing here does I/O.
//!
//! ```ignore
//! fn form_party(mut channels: ResMut<Channels>) {
//!     let _ = channels.create("party:17");
//!     let _ = channels.add("party:17", 42);
//!     let _ = channels.say("party:17", ChannelPayload::Text("welcome".into()));
//! }
//! ```

use bevy_ecs::resource::Resource;

use crate::protocol::AvatarId;

/// Longest channel name, in bytes (names are not empty).
pub const MAX_CHANNEL_NAME: usize = 64;
/// Longest text a game sends, in bytes (the client chat line's cap).
pub const MAX_CHANNEL_TEXT: usize = tessera_proto::client::MAX_CHAT_BYTES;
/// Longest opaque message a game sends, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 1024;
/// Most avatars one message to a list may name.
pub const MAX_RECIPIENTS: usize = 64;
/// Most asks one scene queues in one tick; beyond, they are refused.
pub const MAX_OPS_PER_TICK: usize = 64;

/// What a game sends: a chat line the client shows, or bytes the game's
/// client interprets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPayload {
    Text(String),
    Bytes(Vec<u8>),
}

impl ChannelPayload {
    fn fits(&self) -> bool {
        match self {
            ChannelPayload::Text(t) => !t.is_empty() && t.len() <= MAX_CHANNEL_TEXT,
            ChannelPayload::Bytes(b) => !b.is_empty() && b.len() <= MAX_CHANNEL_BYTES,
        }
    }
}

/// One ask of a game, as it leaves the scene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOp {
    /// Creates the channel (nothing happens if it exists).
    Create {
        channel: String,
    },
    /// Makes `avatar` a member, wherever it is.
    Add {
        channel: String,
        avatar: AvatarId,
    },
    Remove {
        channel: String,
        avatar: AvatarId,
    },
    /// Ends the channel: every membership goes with it.
    Disband {
        channel: String,
    },
    /// To every online member of the channel.
    Send {
        channel: String,
        payload: ChannelPayload,
    },
    /// To each of these avatars that is online, wherever it is.
    SendTo {
        avatars: Vec<AvatarId>,
        payload: ChannelPayload,
    },
}

/// Why an ask was refused (it is counted too, in [`ChannelStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("more than {MAX_OPS_PER_TICK} channel asks this tick")]
    TooManyOps,
    #[error("channel name empty or over {MAX_CHANNEL_NAME} bytes")]
    BadName,
    #[error("message empty or over its cap")]
    BadMessage,
    #[error("no recipient, or more than {MAX_RECIPIENTS}")]
    BadRecipients,
}

/// Asks queued and refused since the scene started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    pub queued: u64,
    /// Over [`MAX_OPS_PER_TICK`] in a tick.
    pub refused_rate: u64,
    /// A name, message or recipient list out of bounds.
    pub refused_bounds: u64,
}

/// The game's handle on channels: every method queues one ask for the end
/// of the tick, or refuses it (counted) without queueing anything.
#[derive(Resource, Debug, Default)]
pub struct Channels {
    ops: Vec<ChannelOp>,
    stats: ChannelStats,
}

impl Channels {
    pub fn create(&mut self, channel: &str) -> Result<(), ChannelError> {
        self.name(channel)?;
        self.queue(ChannelOp::Create {
            channel: channel.to_owned(),
        })
    }

    pub fn add(&mut self, channel: &str, avatar: AvatarId) -> Result<(), ChannelError> {
        self.name(channel)?;
        self.queue(ChannelOp::Add {
            channel: channel.to_owned(),
            avatar,
        })
    }

    pub fn remove(&mut self, channel: &str, avatar: AvatarId) -> Result<(), ChannelError> {
        self.name(channel)?;
        self.queue(ChannelOp::Remove {
            channel: channel.to_owned(),
            avatar,
        })
    }

    pub fn disband(&mut self, channel: &str) -> Result<(), ChannelError> {
        self.name(channel)?;
        self.queue(ChannelOp::Disband {
            channel: channel.to_owned(),
        })
    }

    /// A message to every online member of `channel`.
    pub fn say(&mut self, channel: &str, payload: ChannelPayload) -> Result<(), ChannelError> {
        self.name(channel)?;
        self.message(&payload)?;
        self.queue(ChannelOp::Send {
            channel: channel.to_owned(),
            payload,
        })
    }

    /// A message to each of `avatars` that is online (1 to
    /// [`MAX_RECIPIENTS`] of them; repeats are sent once).
    pub fn send_to(
        &mut self,
        avatars: &[AvatarId],
        payload: ChannelPayload,
    ) -> Result<(), ChannelError> {
        if avatars.is_empty() || avatars.len() > MAX_RECIPIENTS {
            return Err(self.refuse(ChannelError::BadRecipients));
        }
        self.message(&payload)?;
        let mut avatars = avatars.to_vec();
        avatars.sort_unstable();
        avatars.dedup();
        self.queue(ChannelOp::SendTo { avatars, payload })
    }

    /// The asks queued this tick, in order.
    pub fn pending(&self) -> &[ChannelOp] {
        &self.ops
    }

    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// This tick's asks, for the host; the next tick starts a new quota.
    pub(crate) fn take(&mut self) -> Vec<ChannelOp> {
        std::mem::take(&mut self.ops)
    }

    fn name(&mut self, channel: &str) -> Result<(), ChannelError> {
        if channel.is_empty() || channel.len() > MAX_CHANNEL_NAME {
            return Err(self.refuse(ChannelError::BadName));
        }
        Ok(())
    }

    fn message(&mut self, payload: &ChannelPayload) -> Result<(), ChannelError> {
        if !payload.fits() {
            return Err(self.refuse(ChannelError::BadMessage));
        }
        Ok(())
    }

    fn queue(&mut self, op: ChannelOp) -> Result<(), ChannelError> {
        if self.ops.len() >= MAX_OPS_PER_TICK {
            return Err(self.refuse(ChannelError::TooManyOps));
        }
        self.ops.push(op);
        self.stats.queued += 1;
        Ok(())
    }

    fn refuse(&mut self, e: ChannelError) -> ChannelError {
        match e {
            ChannelError::TooManyOps => self.stats.refused_rate += 1,
            _ => self.stats.refused_bounds += 1,
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ChannelPayload {
        ChannelPayload::Text(s.into())
    }

    #[test]
    fn asks_within_bounds_are_queued_in_order() {
        let mut c = Channels::default();
        c.create("party:17").unwrap();
        c.add("party:17", 5).unwrap();
        c.say("party:17", text("hi")).unwrap();
        c.send_to(&[9, 3, 9], ChannelPayload::Bytes(vec![1, 2]))
            .unwrap();
        c.remove("party:17", 5).unwrap();
        c.disband("party:17").unwrap();
        assert_eq!(c.pending().len(), 6);
        assert_eq!(
            c.pending()[3],
            ChannelOp::SendTo {
                avatars: vec![3, 9],
                payload: ChannelPayload::Bytes(vec![1, 2])
            }
        );
        assert_eq!(c.stats().queued, 6);
        assert_eq!(c.take().len(), 6);
        assert!(c.pending().is_empty());
    }

    #[test]
    fn out_of_bounds_asks_are_refused_and_counted() {
        let mut c = Channels::default();
        let long = "x".repeat(MAX_CHANNEL_NAME + 1);
        assert_eq!(c.create(&long), Err(ChannelError::BadName));
        assert_eq!(c.add("", 1), Err(ChannelError::BadName));
        assert!(c.create(&"x".repeat(MAX_CHANNEL_NAME)).is_ok());
        assert_eq!(
            c.say("p", text(&"y".repeat(MAX_CHANNEL_TEXT + 1))),
            Err(ChannelError::BadMessage)
        );
        assert_eq!(c.say("p", text("")), Err(ChannelError::BadMessage));
        assert_eq!(
            c.say("p", ChannelPayload::Bytes(vec![0; MAX_CHANNEL_BYTES + 1])),
            Err(ChannelError::BadMessage)
        );
        assert_eq!(c.send_to(&[], text("a")), Err(ChannelError::BadRecipients));
        let many: Vec<AvatarId> = (0..=MAX_RECIPIENTS as u64).collect();
        assert_eq!(
            c.send_to(&many, text("a")),
            Err(ChannelError::BadRecipients)
        );
        assert!(c.send_to(&many[..MAX_RECIPIENTS], text("a")).is_ok());
        assert_eq!(c.pending().len(), 2, "only the asks within bounds");
        assert_eq!(c.stats().refused_bounds, 7);
    }

    #[test]
    fn asks_past_the_tick_quota_are_refused_until_the_next_tick() {
        let mut c = Channels::default();
        for i in 0..MAX_OPS_PER_TICK {
            c.add("guild", i as u64).unwrap();
        }
        assert_eq!(c.add("guild", 999), Err(ChannelError::TooManyOps));
        assert_eq!(c.stats().refused_rate, 1);
        assert_eq!(c.take().len(), MAX_OPS_PER_TICK);
        assert!(c.add("guild", 999).is_ok(), "a new tick, a new quota");
    }

    /// A game system's asks leave with the tick that made them, and the
    /// quota starts again on the next tick.
    #[test]
    fn a_game_systems_asks_leave_in_its_ticks_output() {
        use bevy_ecs::schedule::IntoScheduleConfigs;
        use bevy_ecs::system::ResMut;

        use crate::scene::SceneDef;
        use crate::{GameSystems, SceneSettings, SceneWorld};

        fn party(mut channels: ResMut<Channels>) {
            for i in 0..=MAX_OPS_PER_TICK as u64 {
                let _ = channels.add("party:1", i);
            }
        }
        let mut world = SceneWorld::builder(
            SceneDef::open_field("test", 100.0),
            SceneSettings::default(),
        )
        .add_plugins(|app: &mut bevy_app::App| {
            app.add_systems(bevy_app::Update, party.in_set(GameSystems::AfterSimulate));
        })
        .build()
        .unwrap();
        for tick in 1..=2u64 {
            let out = world.tick();
            assert_eq!(out.channel_ops.len(), MAX_OPS_PER_TICK);
            assert_eq!(
                out.channel_ops[0],
                ChannelOp::Add {
                    channel: "party:1".into(),
                    avatar: 0
                }
            );
            assert_eq!(world.channel_stats().refused_rate, tick);
        }
    }
}
