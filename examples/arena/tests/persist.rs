//! The arena's saved state across the cluster, in one process over
//! loopback: a coordinator and arena scene servers, players driven by tool
//! clients. A player's hit points survive a logout and login and a portal;
//! the captured shrine keeps its owner when the cluster restarts on the
//! same data directory, and when its scene moves to another scene server.
//!
//! What is checked is what the database holds once the cluster is shut down
//! (its final flush saves every player and object as the world holds them):
//! a lost value would come back as the game's default and be saved so.
#![allow(clippy::unwrap_used)]

#[path = "../../../net/bots/tests/common/mod.rs"]
mod common;
use common::{all_placed, coordinator, defs, secret, until};
mod support;
use support::{action, provision, provision_in, saved};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_arena::{Arena, Attack, Capture, JoinParty};
use tessera_bots::tool::{Attachment, SceneClient, SessionClient};
use tessera_coordinator::Coordinator;
use tessera_proto::{AccountId, SessionId};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::game::ClientAction;
use tessera_wire::{Input, MoveMode};

const TOOL: &str = "tool-1";

async fn arena_server(coord: &str, name: &str) -> SceneServer {
    let cfg = SceneServerConfig {
        coordinator: coord.into(),
        name: name.into(),
        heartbeat_ms: 200,
        ..SceneServerConfig::default()
    };
    SceneServer::start(cfg, secret(), defs(), Arc::new(Arena))
        .await
        .unwrap()
}

/// Sends one action and gives the scene time to take it (and to flush:
/// one second).
async fn act<A: ClientAction>(
    scene: &SceneClient,
    at: &Attachment,
    s: SessionId,
    kind: u16,
    a: &A,
) {
    let mut payload = Vec::new();
    a.encode(&mut payload);
    scene
        .action(&at.scene, at.epoch, s.0, kind, payload)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
}

async fn start(data: &Path, servers: &[&str]) -> (Coordinator, Vec<SceneServer>, String) {
    let coord = coordinator(data, "127.0.0.1:0").await;
    let addr = coord.link_addr().to_string();
    let mut out = Vec::new();
    for name in servers {
        out.push(arena_server(&addr, name).await);
    }
    until(10, "placement", || coord.status(), all_placed).await;
    (coord, out, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_points_and_the_shrine_survive_logout_portal_restart_and_a_move() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Ann and Bob near the west portal (to town); Cid by the shrine,
        // which stands at the field's first spawn point (500, 500).
        let ids = provision(
            &data,
            &[
                ("ann", [14.0, 500.0]),
                ("bob", [18.0, 500.0]),
                ("cid", [500.0, 503.0]),
            ],
        );
        let (coord, servers, addr) = start(&data, &["scene-a"]).await;
        let schema = tessera_sim::game::game_schema(&Arena).unwrap();
        let attack = schema.action("Attack").unwrap() as u16;
        let capture = schema.action("Capture").unwrap() as u16;

        let mut tool = SessionClient::connect(&addr, TOOL, secret()).await.unwrap();
        let mut at = Vec::new();
        let mut sessions = Vec::new();
        for &(account, avatar) in &ids {
            let s = tool.open_session(AccountId(account)).await.unwrap();
            at.push(tool.attach(s, avatar).await.unwrap());
            sessions.push(s);
        }
        let scene = SceneClient::connect(&at[0].addr, TOOL, secret())
            .await
            .unwrap();
        // Ann strikes Bob three times (30 to 60 hit points), and Cid takes
        // the shrine.
        let bob = at[1].net_id;
        for _ in 0..3 {
            act(&scene, &at[0], sessions[0], attack, &Attack { target: bob }).await;
        }
        act(&scene, &at[2], sessions[2], capture, &Capture).await;

        // Bob logs out and in: he comes back with what he had left, so one
        // more blow takes him below it.
        tool.detach(sessions[1]).await.unwrap();
        let back = tool.attach(sessions[1], ids[1].1).await.unwrap();
        act(
            &scene,
            &at[0],
            sessions[0],
            attack,
            &Attack {
                target: back.net_id,
            },
        )
        .await;

        // Bob runs west into the portal to town.
        let (field_scene, epoch, session) = (back.scene.clone(), back.epoch, sessions[1]);
        let runner = tokio::spawn(async move {
            for seq in 1..200u32 {
                let input = Input {
                    seq,
                    dir: [-1.0, 0.0],
                    mode: MoveMode::Run,
                    ..Input::default()
                };
                if scene
                    .input(&field_scene, epoch, session.0, input)
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        tool.set_timeout(Duration::from_secs(20));
        let arrived = tool.wait_attached(sessions[1]).await.unwrap();
        assert_eq!(arrived.scene, "town");
        runner.abort();

        for s in &sessions {
            tool.close_session(*s).await.unwrap();
        }
        for s in servers {
            s.shutdown().await.unwrap();
        }
        coord.shutdown().await;
        let (hp, owner) = saved(&data, "town", ids[1].1);
        let hp = hp.expect("Bob's hit points saved in town");
        // Four blows of 10 to 20: 20 to 60 left. Without the restore at
        // login the fourth would have come off a full 100 (80 to 90).
        assert!((20..=60).contains(&hp), "Bob has {hp}");
        assert_eq!(owner, Some(ids[2].1), "Cid holds the shrine");

        // The whole cluster again on the same data, with two scene
        // servers: the shrine's owner comes back (else the default, nobody,
        // would be saved over it at the first flush).
        let (coord, mut servers, _) = start(&data, &["scene-a", "scene-b"]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The server hosting `field` stops; the scene moves to the other,
        // which loads it from the database.
        let host = coord
            .status()
            .scenes
            .iter()
            .find(|s| s.name == "field")
            .map(|s| s.server.clone())
            .unwrap();
        let i = servers.iter().position(|s| s.name() == host).unwrap();
        servers.remove(i).shutdown().await.unwrap();
        until(
            20,
            "field placed on the other server",
            || coord.status(),
            |s| {
                s.scenes
                    .iter()
                    .any(|r| r.name == "field" && !r.server.is_empty() && r.server != host)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for s in servers {
            s.shutdown().await.unwrap();
        }
        coord.shutdown().await;
        assert_eq!(saved(&data, "town", ids[1].1), (Some(hp), Some(ids[2].1)));
    })
    .await
    .unwrap();
}

/// Party chat: Ann in `field` and Dan in `town` join party 5 (the arena's
/// `JoinParty` action, which asks for channel `party:5`); a line Ann says
/// on the party's channel reaches Dan in the other scene.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_chat_reaches_a_member_in_another_scene() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ids = provision_in(
            &data,
            &[
                ("ann", "field", [500.0, 520.0]),
                ("dan", "town", [300.0, 200.0]),
            ],
        );
        let (coord, servers, addr) = start(&data, &["scene-a"]).await;
        let mut tool = SessionClient::connect(&addr, TOOL, secret()).await.unwrap();
        let mut at = Vec::new();
        for &(account, avatar) in &ids {
            let s = tool.open_session(AccountId(account)).await.unwrap();
            at.push((s, tool.attach(s, avatar).await.unwrap()));
        }
        assert_eq!(
            (at[0].1.scene.as_str(), at[1].1.scene.as_str()),
            ("field", "town")
        );
        let scene = SceneClient::connect(&at[0].1.addr, TOOL, secret())
            .await
            .unwrap();
        for (s, a) in &at {
            act(&scene, a, *s, action("JoinParty"), &JoinParty { party: 5 }).await;
        }
        let channel = tessera_proto::ChatTarget::Channel("party:5".into());
        tool.chat(at[0].0, channel, "to the bridge").await.unwrap();
        let line = tool.next_chat(Duration::from_secs(10)).await.unwrap();
        assert_eq!(line.text, "to the bridge");
        assert_eq!(
            line.scope,
            tessera_proto::ChatScope::Channel("party:5".into())
        );
        assert!(
            line.sessions.contains(&at[1].0),
            "Dan in town hears it: {line:?}"
        );
        for s in servers {
            s.shutdown().await.unwrap();
        }
        coord.shutdown().await;
    })
    .await
    .unwrap();
}
