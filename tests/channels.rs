//! Channels end to end on loopback: a coordinator, a scene server hosting
//! `field` and `town`, and a gate, with a test game that puts every party
//! member it sees attached into channel `party:1` (and Dave, who never logs
//! in), and from `field` keeps sending a roll call to a list of avatars and
//! bytes to the channel. Alice (in `field`) says a line on the channel and
//! Bob (in `town`) hears it; Bob hears `field`'s roll call; Carol, not a
//! member, is told so; Dave is skipped as offline. Bob stays a member
//! across leaving the world and entering again.
#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "client_path/fixture.rs"]
mod fixture;
use common::{bounded, defs};
use fixture::*;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;
use tessera_coordinator::DB_FILE;
use tessera_coordinator::login::LoginConfig;
use tessera_gate::server::{GateServer, GateServerConfig};
use tessera_persistence::{self as db, NewAvatar, Store};
use tessera_proto::client::{ChatScope, ChatTarget, ClientMsg, ServerMsg};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::components::{Pc, TickCount};
use tessera_sim::{
    AvatarId, ChannelPayload, Channels, Game, GameSystems, SceneInfo, SceneWorldBuilder,
};
use tessera_wire::Secret;

const PARTY: &str = "party:1";
const ROLL_CALL: &str = "roll call";
const PARTY_BYTES: [u8; 3] = [1, 2, 3];

/// The avatars the game puts in the party, and who is offline for ever.
#[derive(Resource, Clone)]
struct Party {
    members: Vec<AvatarId>,
    offline: AvatarId,
}

struct PartyGame(Party);

impl Game for PartyGame {
    fn name(&self) -> &'static str {
        "channels-test"
    }

    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.add_plugins(PartyPlugin(self.0.clone()))
    }
}

struct PartyPlugin(Party);

impl Plugin for PartyPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.0.clone())
            .add_systems(Update, party.in_set(GameSystems::AfterSimulate));
    }
}

/// Creates the channel, adds the party's attached members (and the offline
/// one), and from `field` every half second sends the roll call to the
/// party list and bytes to the channel.
fn party(
    mut channels: ResMut<Channels>,
    pcs: Query<&Pc>,
    party: Res<Party>,
    tick: Res<TickCount>,
    info: Res<SceneInfo>,
    mut added: Local<BTreeSet<AvatarId>>,
) {
    if added.is_empty() {
        channels.create(PARTY).unwrap();
        channels.add(PARTY, party.offline).unwrap();
        added.insert(party.offline);
    }
    for pc in &pcs {
        if party.members.contains(&pc.avatar) && added.insert(pc.avatar) {
            channels.add(PARTY, pc.avatar).unwrap();
        }
    }
    if info.def.name == "field" && tick.0.is_multiple_of(10) {
        let mut list = party.members.clone();
        list.push(party.offline);
        channels
            .send_to(&list, ChannelPayload::Text(ROLL_CALL.into()))
            .unwrap();
        channels
            .say(PARTY, ChannelPayload::Bytes(PARTY_BYTES.to_vec()))
            .unwrap();
    }
}

/// An account `name` with one avatar (capitalised) saved in `scene` at `pos`.
fn provision(store: &Store, name: &str, scene: &str, pos: [f32; 2]) -> AvatarId {
    let scene = store.ensure_scene(scene).unwrap();
    let account = store
        .register(&format!("{name}@example.com"), PASSWORD, None)
        .unwrap();
    let mut shown = name.to_string();
    shown[..1].make_ascii_uppercase();
    let avatar = store
        .provision_avatars(
            account,
            &[NewAvatar {
                name: shown,
                figure: "f".into(),
                scene,
            }],
        )
        .unwrap()[0];
    store
        .save_batch(&db::SaveBatch {
            scene,
            objects: Vec::new(),
            states: vec![db::PcState {
                avatar,
                scene,
                position: pos,
                heading: 0.0,
                action: 0,
                mount: 0,
                online: false,
                tick: 1,
                game: Vec::new(),
            }],
        })
        .unwrap();
    avatar
}

fn metric(c: &tessera_coordinator::Coordinator, series: &str) -> f64 {
    tessera_metrics::read_sample(&c.metrics().render(), series).unwrap_or(0.0)
}

#[test]
fn a_channel_line_and_a_list_message_reach_members_in_another_scene() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let party = {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            let alice = provision(&store, "alice", "field", [500.0, 500.0]);
            let bob = provision(&store, "bob", "town", [200.0, 200.0]);
            provision(&store, "carol", "field", [510.0, 500.0]);
            let dave = provision(&store, "dave", "town", [210.0, 200.0]);
            Party {
                members: vec![alice, bob],
                offline: dave,
            }
        };
        let coord = coordinator(&data, "127.0.0.1:0", LoginConfig::default()).await;
        let link = coord.link_addr().to_string();
        let secret = Secret::new(SECRET);
        let scene = SceneServer::start(
            SceneServerConfig {
                coordinator: link.clone(),
                name: "scene-1".into(),
                heartbeat_ms: 100,
                ..SceneServerConfig::default()
            },
            secret.clone(),
            defs(),
            Arc::new(PartyGame(party.clone())),
        )
        .await
        .unwrap();
        let gate = GateServer::start(
            GateServerConfig {
                coordinator: link,
                name: "gate-1".into(),
                listen: "127.0.0.1:0".into(),
                listeners: 1,
                heartbeat_ms: 100,
                ..GateServerConfig::default()
            },
            secret,
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = coord.status();
            if s.gates.iter().any(|g| g.alive)
                && s.scenes.iter().all(|r| !r.server.is_empty())
                && scene.placements().len() == defs().len()
            {
                break;
            }
            assert!(Instant::now() < deadline, "cluster not ready: {s:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And the gate's first heartbeat (its addresses) has arrived.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let http = format!("http://{}", coord.http_addr());
        let mut players = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let (status, v) = post(
                &http,
                "/v1/login",
                &tessera_proto::login::LoginRequest {
                    email: Some(format!("{name}@example.com")),
                    password: Some(PASSWORD.into()),
                    resume_key: None,
                    client_version: tessera_proto::CLIENT_PROTOCOL,
                    game_protocol: None,
                },
                None,
            )
            .await;
            assert_eq!(status, 200, "{v}");
            let mut p = Player::connect(&serde_json::from_value(v).unwrap()).await;
            p.enter().await;
            players.push(p);
        }
        let [mut alice, mut bob, mut carol] = <[Player; 3]>::try_from(players).ok().unwrap();
        assert_eq!(
            (alice.scene.as_str(), bob.scene.as_str()),
            ("field", "town")
        );

        // Once each has the game's bytes for the channel, each is a member.
        let party_bytes = |m: &ServerMsg| {
            matches!(m, ServerMsg::GameData { channel: Some(c), data }
                if c == PARTY && data[..] == PARTY_BYTES)
        };
        alice.until(10, "the party's bytes", party_bytes).await;
        bob.until(10, "the party's bytes", party_bytes).await;

        // A list message from `field` reaches Bob in `town`, marked as the game's.
        let roll_call = bob
            .until(
                10,
                "the roll call",
                |m| matches!(m, ServerMsg::Chat { text, .. } if text == ROLL_CALL),
            )
            .await;
        assert_eq!(
            roll_call,
            ServerMsg::Chat {
                from: String::new(),
                scope: ChatScope::Game,
                text: ROLL_CALL.into()
            }
        );

        // Alice, in `field`, speaks on the channel: Bob hears it in `town`.
        alice.send(&ClientMsg::Chat {
            to: ChatTarget::Channel(PARTY.into()),
            text: "meet at the bridge".into(),
        });
        let line = bob
            .until(10, "Alice's line", |m| {
                matches!(
                    m,
                    ServerMsg::Chat {
                        scope: ChatScope::Channel(_),
                        ..
                    }
                )
            })
            .await;
        assert_eq!(
            line,
            ServerMsg::Chat {
                from: "Alice".into(),
                scope: ChatScope::Channel(PARTY.into()),
                text: "meet at the bridge".into()
            }
        );

        // Bob leaves the world and comes back: still a member (by avatar),
        // though the game never added him again.
        bob.send(&ClientMsg::Leave);
        bob.until(5, "left", |m| matches!(m, ServerMsg::Left { .. }))
            .await;
        bob.send(&ClientMsg::ListAvatars);
        bob.enter().await;
        alice.send(&ClientMsg::Chat {
            to: ChatTarget::Channel(PARTY.into()),
            text: "welcome back".into(),
        });
        bob.until(
            10,
            "Alice's second line",
            |m| matches!(m, ServerMsg::Chat { text, .. } if text == "welcome back"),
        )
        .await;

        // Carol is not a member: she is told, and hears nothing of the party.
        carol.send(&ClientMsg::Chat {
            to: ChatTarget::Channel(PARTY.into()),
            text: "let me in".into(),
        });
        let refused = carol
            .until(10, "the refusal", |m| matches!(m, ServerMsg::Error { .. }))
            .await;
        let ServerMsg::Error { code, text } = refused else {
            unreachable!()
        };
        assert_eq!(code, "refused");
        assert!(text.contains("not a member"), "{text}");
        carol.pump(300).await;
        assert!(
            carol
                .chat
                .iter()
                .all(|(_, s, _)| *s != ChatScope::Channel(PARTY.into())),
            "{:?}",
            carol.chat
        );
        bob.pump(300).await;
        assert!(
            !bob.chat.iter().any(|(_, _, t)| t == "let me in"),
            "a refused line goes nowhere"
        );

        // Dave never logged in: every message to him was skipped, counted.
        assert!(
            metric(
                &coord,
                "tessera_coordinator_channel_recipients_offline_total"
            ) >= 2.0
        );
        assert_eq!(
            metric(&coord, "tessera_coordinator_channel_lines_refused_total"),
            1.0
        );
        assert_eq!(metric(&coord, "tessera_coordinator_channels"), 1.0);
        assert_eq!(metric(&coord, "tessera_coordinator_channel_members"), 3.0);

        drop((alice, bob, carol));
        gate.shutdown().await;
        scene.shutdown().await.unwrap();
        coord.shutdown().await;
    });
}
