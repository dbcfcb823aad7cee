//! One of every link message, with every field set: the fixture the
//! round-trip tests send.

use tessera_link::LinkMsg;
use tessera_proto::{AccountId, SessionId};
use tessera_wire::{
    AttachedSession, Heartbeat, Input, MoveMode, Placement, Register, SceneCommand, SceneLoad,
    SessionEvent, WireEvent, WireGameField, WireObjectState, WirePcState, WireSaveBatch,
};

/// One message of each variant (the match at the end fails to compile
/// when a variant is added and not listed here).
pub fn every_variant() -> Vec<LinkMsg> {
    let field = WireGameField {
        name: "hp".into(),
        version: 3,
        bytes: vec![7, 0, 200],
    };
    let object = WireObjectState {
        key: 99,
        tick: 9_000,
        game: vec![field.clone()],
    };
    let state = WirePcState {
        game: vec![field],
        avatar: 42,
        position: [12.5, 800.25],
        heading: 1.5,
        action: 2,
        mount: 1,
        online: true,
        tick: 9_001,
    };
    let msgs = vec![
        LinkMsg::Heartbeat(Heartbeat {
            seq: 7,
            scenes: vec![SceneLoad {
                scene: "meadow".into(),
                epoch: 3,
                population: 5_000,
                tick_p99_us: 12_345,
            }],
            online: 1_500,
            addrs: vec!["127.0.0.1:7300".into()],
        }),
        LinkMsg::Register(Register {
            addr: "127.0.0.1:7100".into(),
            capacity: 4,
            hosted: vec![Placement {
                scene: "meadow".into(),
                epoch: 3,
            }],
            game: "arena".into(),
        }),
        LinkMsg::Registered { heartbeat_ms: 500 },
        LinkMsg::Deregister {
            reason: "SIGTERM".into(),
        },
        LinkMsg::PlaceScene {
            objects: vec![object.clone()],
            scene: "meadow".into(),
            epoch: 4,
            chunks: 1,
            states: 2,
        },
        LinkMsg::SceneStates {
            scene: "meadow".into(),
            epoch: 4,
            seq: 0,
            states: vec![state.clone(), WirePcState::default()],
        },
        LinkMsg::SceneReady {
            scene: "meadow".into(),
            epoch: 4,
        },
        LinkMsg::DropScene {
            scene: "meadow".into(),
            epoch: 4,
        },
        LinkMsg::SceneReleased {
            scene: "meadow".into(),
            epoch: 4,
        },
        LinkMsg::EpochStale {
            scene: "meadow".into(),
            current: 5,
        },
        LinkMsg::Command {
            scene: "meadow".into(),
            epoch: 4,
            command: SceneCommand::Attach {
                client: 1,
                avatar: 42,
                state: Some(state.clone()),
                figure: 3,
            },
        },
        LinkMsg::Command {
            scene: "meadow".into(),
            epoch: 4,
            command: SceneCommand::Input {
                client: 1,
                input: Input {
                    seq: 11,
                    dir: [0.6, -0.8],
                    mode: MoveMode::Run,
                    heading: 0.5,
                    action: 0,
                    mount: 0,
                    state_ack: Default::default(),
                },
            },
        },
        LinkMsg::Command {
            scene: "meadow".into(),
            epoch: 4,
            command: SceneCommand::Detach { client: 1 },
        },
        LinkMsg::Event {
            scene: "meadow".into(),
            epoch: 4,
            event: WireEvent::Attached {
                client: 1,
                avatar: 42,
                net_id: 17,
            },
        },
        LinkMsg::Event {
            scene: "meadow".into(),
            epoch: 4,
            event: WireEvent::AttachRejected {
                client: 2,
                avatar: 43,
                reason: "scene full".into(),
            },
        },
        LinkMsg::Event {
            scene: "meadow".into(),
            epoch: 4,
            event: WireEvent::Detached {
                client: 1,
                state: state.clone(),
            },
        },
        LinkMsg::Event {
            scene: "meadow".into(),
            epoch: 4,
            event: WireEvent::Portal {
                client: 1,
                avatar: 42,
                target: "cave".into(),
                target_pos: [3.0, 4.0],
            },
        },
        LinkMsg::Replication {
            client: 1,
            bytes: (0..1000u32).map(|i| i as u8).collect(),
        },
        LinkMsg::SaveBatch(WireSaveBatch {
            objects: vec![object],
            seq: 17,
            scene: "meadow".into(),
            epoch: 4,
            tick: 9_001,
            states: vec![state.clone(), WirePcState::default()],
        }),
        LinkMsg::SaveAck { through: 17 },
        LinkMsg::Refused {
            reason: "not registered".into(),
        },
        LinkMsg::OpenSession {
            request: 3,
            account: AccountId(11),
            client: SessionId(1 << 63),
            nonce: [4; 16],
        },
        LinkMsg::ListAvatars {
            session: SessionId(99),
        },
        LinkMsg::CreateAvatar {
            session: SessionId(99),
            name: "Ann".into(),
        },
        LinkMsg::Chat {
            session: SessionId(99),
            to: tessera_wire::ChatTarget::Whisper("Bob".into()),
            text: "hello".into(),
        },
        LinkMsg::ChatTo {
            sessions: vec![SessionId(1), SessionId(2)],
            from: "Ann".into(),
            scope: tessera_wire::ChatScope::Whisper,
            text: "hello".into(),
        },
        LinkMsg::CloseSession {
            session: SessionId(99),
        },
        LinkMsg::Inputs {
            scene: "meadow".into(),
            epoch: 4,
            inputs: vec![
                (7, tessera_proto::Uplink::Input(Input::default())),
                (
                    8,
                    tessera_proto::Uplink::Action {
                        kind: 2,
                        payload: vec![1, 2],
                    },
                ),
            ],
        },
        LinkMsg::ToClients {
            items: vec![
                tessera_wire::ToClient::Event {
                    client: 3,
                    kind: 1,
                    reliable: true,
                    payload: vec![9],
                },
                tessera_wire::ToClient::Kick {
                    client: 4,
                    reason: "malformed action".into(),
                },
            ],
        },
        LinkMsg::ReplicationBatch {
            packets: vec![(1, vec![1, 2, 3]), (2, vec![])],
        },
        LinkMsg::AttachAvatar {
            session: SessionId(99),
            avatar: 5,
        },
        LinkMsg::DetachAvatar {
            session: SessionId(99),
        },
        LinkMsg::Session {
            session: SessionId(99),
            event: SessionEvent::Routed {
                avatar: 5,
                scene: "meadow".into(),
                epoch: 4,
                server: "scene-1".into(),
                addr: "127.0.0.1:7100".into(),
            },
        },
        LinkMsg::Session {
            session: SessionId(99),
            event: SessionEvent::Refused {
                request: 3,
                reason: "scene full".into(),
            },
        },
        LinkMsg::AttachAt {
            scene: "meadow".into(),
            epoch: 4,
            session: SessionId(99),
            avatar: 5,
            gate: "gate-1".into(),
            state: Some(WirePcState::default()),
        },
        LinkMsg::DetachAt {
            scene: "meadow".into(),
            epoch: 4,
            session: SessionId(99),
            avatar: 5,
        },
        LinkMsg::SyncAttached {
            scene: "meadow".into(),
            epoch: 4,
            attached: vec![AttachedSession {
                avatar: 5,
                session: SessionId(99),
                gate: "gate-1".into(),
            }],
        },
        LinkMsg::SnapshotRequest {
            request: 7,
            scene: "meadow".into(),
        },
        LinkMsg::Snapshot {
            request: 7,
            scene: "meadow".into(),
            snapshot: Some(vec![1, 2, 3]),
        },
        LinkMsg::ChannelOps {
            scene: "meadow".into(),
            epoch: 4,
            ops: vec![
                tessera_wire::WireChannelOp::Add {
                    channel: "party:1".into(),
                    avatar: 5,
                },
                tessera_wire::WireChannelOp::SendTo {
                    avatars: vec![5, 6],
                    payload: tessera_wire::WirePayload::Bytes(vec![1]),
                },
            ],
        },
        LinkMsg::GameDataTo {
            sessions: vec![SessionId(1)],
            channel: Some("party:1".into()),
            data: vec![9, 9],
        },
    ];
    // Fails to compile when a variant is added without a case above.
    for m in &msgs {
        match m {
            LinkMsg::Heartbeat(_)
            | LinkMsg::Register(_)
            | LinkMsg::Registered { .. }
            | LinkMsg::Deregister { .. }
            | LinkMsg::PlaceScene { .. }
            | LinkMsg::SceneStates { .. }
            | LinkMsg::SceneReady { .. }
            | LinkMsg::DropScene { .. }
            | LinkMsg::SceneReleased { .. }
            | LinkMsg::EpochStale { .. }
            | LinkMsg::SnapshotRequest { .. }
            | LinkMsg::Snapshot { .. }
            | LinkMsg::Command { .. }
            | LinkMsg::Event { .. }
            | LinkMsg::Replication { .. }
            | LinkMsg::Inputs { .. }
            | LinkMsg::ReplicationBatch { .. }
            | LinkMsg::SaveBatch(_)
            | LinkMsg::SaveAck { .. }
            | LinkMsg::Refused { .. }
            | LinkMsg::OpenSession { .. }
            | LinkMsg::ListAvatars { .. }
            | LinkMsg::CreateAvatar { .. }
            | LinkMsg::Chat { .. }
            | LinkMsg::ChatTo { .. }
            | LinkMsg::CloseSession { .. }
            | LinkMsg::AttachAvatar { .. }
            | LinkMsg::DetachAvatar { .. }
            | LinkMsg::Session { .. }
            | LinkMsg::AttachAt { .. }
            | LinkMsg::DetachAt { .. }
            | LinkMsg::SyncAttached { .. }
            | LinkMsg::ToClients { .. }
            | LinkMsg::ChannelOps { .. }
            | LinkMsg::GameDataTo { .. } => {}
        }
    }
    msgs
}
