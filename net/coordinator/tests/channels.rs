//! Channels at the coordinator, with stand-ins on real links: a scene
//! server hosting `field` and `town` sends a game's channel asks, and a
//! tool carries four sessions (Ann and Cid in `field`, Bea in `town`, Dan
//! in `field` but never online). Delivery reaches the members in both
//! scenes, skips the offline one, refuses a non-member's line, and the
//! channel limits hold.

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_cluster::{ClusterConfig, SessionId};
use tessera_coordinator::{AdminToken, ChannelLimits, Coordinator, CoordinatorConfig, DB_FILE};
use tessera_link::{Link, LinkConfig, Role, connect};
use tessera_persistence::{NewAvatar, Store};
use tessera_proto::AccountId;
use tessera_wire::{
    ChatScope, ChatTarget, Epoch, LinkMsg, Register, Secret, SessionEvent, WireChannelOp,
    WirePayload,
};

const SECRET: &str = "channels-test-cluster-secret";
const PASSWORD: &str = "correct horse battery";

fn bounded<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("the test ran out of time");
    });
}

/// Accounts with one avatar each, in the given scene: (account, avatar).
fn prepare(data: &Path, who: &[(&str, &str)]) -> Vec<(u64, u64)> {
    std::fs::create_dir_all(data).expect("data dir");
    let store = Store::open(data.join(DB_FILE)).expect("store");
    who.iter()
        .map(|(name, scene)| {
            let scene = store.ensure_scene(scene).expect("scene");
            let account = store
                .register(&format!("{name}@example.com"), PASSWORD, None)
                .expect("account");
            let new = NewAvatar {
                name: (*name).into(),
                figure: "f".into(),
                scene,
            };
            let avatar = store.provision_avatars(account, &[new]).expect("avatar")[0];
            (account, avatar)
        })
        .collect()
}

async fn start(data: &Path, channels: ChannelLimits) -> Coordinator {
    Coordinator::start(
        CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            admin_token: AdminToken::new("channels-test-admin-token"),
            data: data.to_path_buf(),
            heartbeat_ms: 50,
            tick_ms: 20,
            channels,
            ..CoordinatorConfig::default()
        },
        ClusterConfig {
            // The stand-ins do not heartbeat.
            heartbeat_timeout_ms: 60_000,
            ..ClusterConfig::default()
        },
        Secret::new(SECRET),
        vec!["field".into(), "town".into()],
    )
    .await
    .expect("coordinator starts")
}

async fn link(c: &Coordinator, role: Role, name: &str) -> Link {
    let cfg = LinkConfig::new(role, name, Secret::new(SECRET));
    connect(&c.link_addr().to_string(), &cfg)
        .await
        .expect("link")
}

/// The next message on `link` that `pick` accepts, within 5 s.
async fn next<T>(link: &mut Link, what: &str, mut pick: impl FnMut(LinkMsg) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, link.recv()).await {
            Ok(Some(msg)) => {
                if let Some(t) = pick(msg) {
                    return t;
                }
            }
            Ok(None) => panic!("link closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// A registered scene server stand-in that reports every placement
/// ready; returns it with the epochs of `field` and `town`.
async fn scene_server(c: &Coordinator) -> (Link, Epoch, Epoch) {
    let mut s = link(c, Role::SceneServer, "scene-1").await;
    s.send(&LinkMsg::Register(Register {
        addr: "127.0.0.1:9".into(),
        capacity: 0,
        hosted: Vec::new(),
        game: "default".into(),
    }))
    .await
    .expect("register");
    let (mut field, mut town) = (None, None);
    while field.is_none() || town.is_none() {
        let (scene, epoch) = next(&mut s, "placements", |m| match m {
            LinkMsg::PlaceScene { scene, epoch, .. } => Some((scene, epoch)),
            _ => None,
        })
        .await;
        s.send(&LinkMsg::SceneReady {
            scene: scene.clone(),
            epoch,
        })
        .await
        .expect("ready");
        match scene.as_str() {
            "field" => field = Some(epoch),
            _ => town = Some(epoch),
        }
    }
    (s, field.expect("field"), town.expect("town"))
}

/// Opens a session for `account` on the tool link and attaches `avatar`.
async fn online(tool: &mut Link, request: u64, account: u64, avatar: u64) -> SessionId {
    tool.send(&LinkMsg::OpenSession {
        request,
        account: AccountId(account),
        client: SessionId(0),
        nonce: [0; 16],
    })
    .await
    .expect("open");
    let session = next(tool, "the session", |m| match m {
        LinkMsg::Session {
            session,
            event: SessionEvent::Opened { request: r, .. },
        } if r == request => Some(session),
        _ => None,
    })
    .await;
    tool.send(&LinkMsg::AttachAvatar { session, avatar })
        .await
        .expect("attach");
    next(tool, "routed", |m| match m {
        LinkMsg::Session {
            session: s,
            event: SessionEvent::Routed { .. },
        } if s == session => Some(()),
        _ => None,
    })
    .await;
    session
}

fn metric(c: &Coordinator, series: &str) -> f64 {
    tessera_metrics::read_sample(&c.metrics().render(), series).unwrap_or(-1.0)
}

/// The next chat delivery on the tool link: (sessions, from, scope, text).
async fn chat_to(tool: &mut Link) -> (Vec<SessionId>, String, ChatScope, String) {
    next(tool, "a chat delivery", |m| match m {
        LinkMsg::ChatTo {
            mut sessions,
            from,
            scope,
            text,
        } => {
            sessions.sort();
            Some((sessions, from, scope, text))
        }
        _ => None,
    })
    .await
}

fn text(s: &str) -> WirePayload {
    WirePayload::Text(s.into())
}

#[test]
fn channel_messages_reach_online_members_in_every_scene_and_only_members_speak() {
    bounded(60, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let who = prepare(
            &data,
            &[
                ("Ann", "field"),
                ("Bea", "town"),
                ("Cid", "field"),
                ("Dan", "field"),
            ],
        );
        let limits = ChannelLimits {
            max_channels: 1,
            max_members: 3,
            max_per_avatar: 1,
        };
        let c = start(&data, limits).await;
        let (scene, field, town) = scene_server(&c).await;
        let mut tool = link(&c, Role::Tool, "tool-1").await;
        let (ann, bea, cid, dan) = (who[0].1, who[1].1, who[2].1, who[3].1);
        let s_ann = online(&mut tool, 1, who[0].0, ann).await;
        let s_bea = online(&mut tool, 2, who[1].0, bea).await;
        let s_cid = online(&mut tool, 3, who[2].0, cid).await;

        // `field` makes the party: Ann, Bea (in `town`) and Dan (offline).
        let ops = |epoch, ops| LinkMsg::ChannelOps {
            scene: "field".into(),
            epoch,
            ops,
        };
        let add = |avatar| WireChannelOp::Add {
            channel: "p".into(),
            avatar,
        };
        let send = |t: &str| WireChannelOp::Send {
            channel: "p".into(),
            payload: text(t),
        };
        scene
            .send(&ops(
                field,
                vec![
                    WireChannelOp::Create {
                        channel: "p".into(),
                    },
                    add(ann),
                    add(bea),
                    add(dan),
                    send("welcome"),
                ],
            ))
            .await
            .expect("ops");
        let (sessions, from, scope, said) = chat_to(&mut tool).await;
        assert_eq!(sessions, sorted(vec![s_ann, s_bea]), "not Cid, not Dan");
        assert_eq!(
            (from.as_str(), scope, said.as_str()),
            ("", ChatScope::Channel("p".into()), "welcome")
        );
        assert_eq!(
            metric(&c, "tessera_coordinator_channel_recipients_offline_total"),
            1.0
        );

        // Bounds: a second channel, a fourth member, Ann in a second
        // channel; and asks of a stale placement are ignored.
        scene
            .send(&ops(
                field,
                vec![
                    WireChannelOp::Create {
                        channel: "q".into(),
                    },
                    add(cid),
                ],
            ))
            .await
            .expect("ops");
        scene
            .send(&ops(
                town + 100,
                vec![WireChannelOp::Disband {
                    channel: "p".into(),
                }],
            ))
            .await
            .expect("stale ops");
        // A list message from `town`, as bytes: on the scene link after
        // the asks above, so it is handled after them.
        scene
            .send(&LinkMsg::ChannelOps {
                scene: "town".into(),
                epoch: town,
                ops: vec![WireChannelOp::SendTo {
                    avatars: vec![cid, ann, dan],
                    payload: WirePayload::Bytes(vec![7]),
                }],
            })
            .await
            .expect("ops");
        let (mut sessions, channel, data) = next(&mut tool, "game data", |m| match m {
            LinkMsg::GameDataTo {
                sessions,
                channel,
                data,
            } => Some((sessions, channel, data)),
            _ => None,
        })
        .await;
        sessions.sort();
        assert_eq!(
            (sessions, channel, data),
            (sorted(vec![s_ann, s_cid]), None, vec![7])
        );
        assert_eq!(
            metric(
                &c,
                "tessera_coordinator_channel_ops_total{outcome=\"refused\"}"
            ),
            2.0,
            "q over max_channels, Cid into a missing q"
        );
        assert_eq!(metric(&c, "tessera_coordinator_channels"), 1.0);
        assert_eq!(metric(&c, "tessera_coordinator_channel_members"), 3.0);

        // Members speak on the channel; a non-member is told why.
        tool.send(&LinkMsg::Chat {
            session: s_cid,
            to: ChatTarget::Channel("p".into()),
            text: "me too".into(),
        })
        .await
        .expect("chat");
        let reason = next(&mut tool, "the refusal", |m| match m {
            LinkMsg::Session {
                session,
                event: SessionEvent::Refused { reason, .. },
            } if session == s_cid => Some(reason),
            _ => None,
        })
        .await;
        assert!(reason.contains("not a member"), "{reason}");
        tool.send(&LinkMsg::Chat {
            session: s_bea,
            to: ChatTarget::Channel("p".into()),
            text: "hi all".into(),
        })
        .await
        .expect("chat");
        let (sessions, from, scope, said) = chat_to(&mut tool).await;
        assert_eq!(sessions, sorted(vec![s_ann, s_bea]));
        assert_eq!(
            (from.as_str(), scope, said.as_str()),
            ("Bea", ChatScope::Channel("p".into()), "hi all")
        );
        assert_eq!(
            metric(&c, "tessera_coordinator_channel_lines_refused_total"),
            1.0
        );

        // Full: a fourth member is refused; disbanded, no one speaks on it.
        scene
            .send(&ops(
                field,
                vec![
                    add(cid),
                    send("full"),
                    WireChannelOp::Disband {
                        channel: "p".into(),
                    },
                ],
            ))
            .await
            .expect("ops");
        let (sessions, ..) = chat_to(&mut tool).await;
        assert_eq!(sessions, sorted(vec![s_ann, s_bea]), "Cid was not added");
        tool.send(&LinkMsg::Chat {
            session: s_ann,
            to: ChatTarget::Channel("p".into()),
            text: "anyone?".into(),
        })
        .await
        .expect("chat");
        next(&mut tool, "the refusal", |m| match m {
            LinkMsg::Session {
                session,
                event: SessionEvent::Refused { .. },
            } if session == s_ann => Some(()),
            _ => None,
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(&c, "tessera_coordinator_channel_members") != 0.0 {
            assert!(
                Instant::now() < deadline,
                "memberships left after a disband"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metric(&c, "tessera_coordinator_channels"), 0.0);
        c.shutdown().await;
    });
}

fn sorted(mut v: Vec<SessionId>) -> Vec<SessionId> {
    v.sort();
    v
}
