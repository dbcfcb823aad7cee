//! Conversions between the scene-facing wire types ([`SceneCommand`],
//! [`WireEvent`], [`WirePcState`], [`WireSaveBatch`]) and `tessera_sim`'s
//! host interface.
//!
//! The wire types mirror the sim's rather than reuse them, so the sim crate
//! stays free of wire concerns and a wire change never silently follows a sim
//! refactor. A client's [`Input`](crate::Input) is the client protocol's own
//! type (`tessera_proto`), forwarded unchanged.

use tessera_sim::protocol::{GameField, Inbound, ObjectState, PcState, SaveBatch, SceneEvent};
use tessera_sim::{ChannelOp, ChannelPayload};

use crate::{
    Epoch, SceneCommand, WireChannelOp, WireEvent, WireGameField, WireObjectState, WirePayload,
    WirePcState, WireSaveBatch,
};

impl From<ChannelPayload> for WirePayload {
    fn from(p: ChannelPayload) -> Self {
        match p {
            ChannelPayload::Text(t) => Self::Text(t),
            ChannelPayload::Bytes(b) => Self::Bytes(b),
        }
    }
}

impl From<GameField> for WireGameField {
    fn from(f: GameField) -> Self {
        Self {
            name: f.name.to_string(),
            version: f.version,
            bytes: f.bytes.to_vec(),
        }
    }
}

impl From<ChannelOp> for WireChannelOp {
    fn from(op: ChannelOp) -> Self {
        match op {
            ChannelOp::Create { channel } => Self::Create { channel },
            ChannelOp::Add { channel, avatar } => Self::Add { channel, avatar },
            ChannelOp::Remove { channel, avatar } => Self::Remove { channel, avatar },
            ChannelOp::Disband { channel } => Self::Disband { channel },
            ChannelOp::Send { channel, payload } => Self::Send {
                channel,
                payload: payload.into(),
            },
            ChannelOp::SendTo { avatars, payload } => Self::SendTo {
                avatars,
                payload: payload.into(),
            },
        }
    }
}

impl From<WireGameField> for GameField {
    fn from(f: WireGameField) -> Self {
        Self {
            name: f.name.into(),
            version: f.version,
            bytes: f.bytes.into(),
        }
    }
}

impl From<ObjectState> for WireObjectState {
    fn from(o: ObjectState) -> Self {
        Self {
            key: o.key,
            tick: o.tick,
            game: o.game.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<WireObjectState> for ObjectState {
    fn from(o: WireObjectState) -> Self {
        Self {
            key: o.key,
            tick: o.tick,
            game: o.game.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<PcState> for WirePcState {
    fn from(s: PcState) -> Self {
        Self {
            avatar: s.avatar,
            position: s.position,
            heading: s.heading,
            action: s.action,
            mount: s.mount,
            online: s.online,
            tick: s.tick,
            game: s.game.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<WirePcState> for PcState {
    fn from(s: WirePcState) -> Self {
        Self {
            avatar: s.avatar,
            position: s.position,
            heading: s.heading,
            action: s.action,
            mount: s.mount,
            online: s.online,
            tick: s.tick,
            game: s.game.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&Inbound> for SceneCommand {
    fn from(c: &Inbound) -> Self {
        match c {
            Inbound::Attach {
                client,
                avatar,
                state,
                figure,
            } => Self::Attach {
                client: *client,
                avatar: *avatar,
                state: state.clone().map(Into::into),
                figure: *figure,
            },
            Inbound::Detach { client } => Self::Detach { client: *client },
            Inbound::Input { client, input } => Self::Input {
                client: *client,
                input: *input,
            },
            Inbound::Ack { client, ack } => Self::Ack {
                client: *client,
                ack: *ack,
            },
            Inbound::Action {
                client,
                kind,
                payload,
            } => Self::Action {
                client: *client,
                kind: *kind,
                payload: payload.clone(),
            },
        }
    }
}

impl From<SceneCommand> for Inbound {
    fn from(c: SceneCommand) -> Self {
        match c {
            SceneCommand::Attach {
                client,
                avatar,
                state,
                figure,
            } => Self::Attach {
                client,
                avatar,
                state: state.map(Into::into),
                figure,
            },
            SceneCommand::Detach { client } => Self::Detach { client },
            SceneCommand::Input { client, input } => Self::Input { client, input },
            SceneCommand::Ack { client, ack } => Self::Ack { client, ack },
            SceneCommand::Action {
                client,
                kind,
                payload,
            } => Self::Action {
                client,
                kind,
                payload,
            },
        }
    }
}

impl WireEvent {
    /// The coordinator's part of a scene event; `None` for those that go to
    /// the client's gate instead (a game event, a misbehaving client).
    pub fn of(e: &SceneEvent) -> Option<Self> {
        Some(match e {
            SceneEvent::Attached {
                client,
                avatar,
                net_id,
            } => Self::Attached {
                client: *client,
                avatar: *avatar,
                net_id: *net_id,
            },
            SceneEvent::AttachRejected {
                client,
                avatar,
                reason,
            } => Self::AttachRejected {
                client: *client,
                avatar: *avatar,
                reason: (*reason).to_owned(),
            },
            SceneEvent::Detached { client, state } => Self::Detached {
                client: *client,
                state: state.clone().into(),
            },
            SceneEvent::Portal {
                client,
                avatar,
                target,
                target_pos,
            } => Self::Portal {
                client: *client,
                avatar: *avatar,
                target: target.clone(),
                target_pos: *target_pos,
            },
            SceneEvent::Misbehaved { .. } => return None,
        })
    }
}

impl WireSaveBatch {
    /// The wire form of a scene's batch, tagged with the placement epoch
    /// (`seq` 0: the sender numbers it).
    pub fn from_sim(batch: &SaveBatch, epoch: Epoch) -> Self {
        Self {
            seq: 0,
            scene: batch.scene.clone(),
            epoch,
            tick: batch.tick,
            states: batch.states.iter().map(|s| s.clone().into()).collect(),
            objects: batch.objects.iter().map(|o| o.clone().into()).collect(),
        }
    }

    /// The scene core's form (the epoch is dropped: check it first).
    pub fn to_sim(&self) -> SaveBatch {
        SaveBatch {
            scene: self.scene.clone(),
            tick: self.tick,
            states: self.states.iter().map(|s| s.clone().into()).collect(),
            objects: self.objects.iter().map(|o| o.clone().into()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Input, LinkMsg, MoveMode};

    #[test]
    fn sim_types_convert_both_ways() {
        let state = PcState {
            avatar: 7,
            position: [1.5, -2.0],
            heading: 0.25,
            action: 3,
            mount: 1,
            online: true,
            tick: 99,
            game: vec![GameField {
                name: "hp".into(),
                version: 2,
                bytes: vec![1, 2].into(),
            }],
        };
        let input = Input {
            seq: 5,
            dir: [0.0, 1.0],
            mode: MoveMode::Run,
            heading: 1.0,
            action: 2,
            mount: 0,
            state_ack: tessera_proto::StateAck {
                scene: 1,
                epoch: 2,
                tick: 3,
                mask: 4,
            },
        };
        for cmd in [
            Inbound::Attach {
                client: 1,
                avatar: 7,
                state: Some(state.clone()),
                figure: 4,
            },
            Inbound::Attach {
                client: 1,
                avatar: 7,
                state: None,
                figure: 4,
            },
            Inbound::Detach { client: 1 },
            Inbound::Input { client: 1, input },
        ] {
            let wire = SceneCommand::from(&cmd);
            let msg = LinkMsg::Command {
                scene: "meadow".into(),
                epoch: 3,
                command: wire,
            };
            let Ok(LinkMsg::Command { command, .. }) = LinkMsg::decode(&msg.encode()) else {
                panic!("command did not round-trip");
            };
            assert_eq!(Inbound::from(command), cmd);
        }
        let batch = SaveBatch {
            scene: "meadow".into(),
            tick: 10,
            states: vec![state.clone()],
            objects: vec![ObjectState {
                key: 7,
                tick: 9,
                game: state.game.clone(),
            }],
        };
        assert_eq!(WireSaveBatch::from_sim(&batch, 2).to_sim(), batch);
        let ev = WireEvent::of(&SceneEvent::AttachRejected {
            client: 1,
            avatar: 2,
            reason: "scene full",
        });
        assert_eq!(
            ev,
            Some(WireEvent::AttachRejected {
                client: 1,
                avatar: 2,
                reason: "scene full".into()
            })
        );
        // A misbehaving client is its gate's business, not the coordinator's.
        let kick = SceneEvent::Misbehaved {
            client: 1,
            reason: "malformed action".into(),
        };
        assert_eq!(WireEvent::of(&kick), None);
    }
}
