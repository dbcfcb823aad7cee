//! The cluster in one process over loopback: a coordinator, scene servers and
//! a tool client — sessions, attach / detach, a portal transfer, a restart of
//! the coordinator, a graceful scene-server shutdown. (Process kills and
//! pauses are in the root crate's `tests/cluster.rs`.)
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tessera_bots::tool::{SceneClient, SessionClient};
use tessera_cluster::ClusterStatus;
use tessera_coordinator::DB_FILE;
use tessera_persistence::Store;
use tessera_proto::AccountId;
use tessera_wire::{Input, MoveMode};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_move_portal_transfer_detach_and_reload() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Saved 10 units west of the field's east portal (x 996..1000, y 480..520).
        let (account, avatar) = provision(&data, "field", [986.0, 500.0]);
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let server = scene_server(&coord.link_addr().to_string(), "scene-a").await;
        until(10, "placement", || coord.status(), all_placed).await;

        let addr = coord.link_addr().to_string();
        let mut tool = SessionClient::connect(&addr, "tool-1", secret())
            .await
            .unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        let a = tool.attach(session, avatar).await.unwrap();
        assert_eq!(a.scene, "field");
        assert_eq!(a.server, "scene-a");

        // Attaching the same avatar from another session is refused while online.
        let mut other = SessionClient::connect(&addr, "tool-2", secret())
            .await
            .unwrap();
        let err = other.open_session(AccountId(999_999)).await.unwrap_err();
        assert!(err.to_string().contains("no account"), "{err}");

        // Run east into the portal; the tool sees the transfer and the re-attach.
        let mut scene = SceneClient::connect(&a.addr, "tool-1", secret())
            .await
            .unwrap();
        let (sc, ep) = (a.scene.clone(), a.epoch);
        let mover = tokio::spawn(async move {
            let mut got = 0u32;
            for seq in 1..=60u32 {
                let input = Input {
                    seq,
                    dir: [1.0, 0.0],
                    mode: MoveMode::Run,
                    ..Input::default()
                };
                if scene.input(&sc, ep, session.0, input).await.is_err() {
                    break;
                }
                while let Ok((c, bytes)) = scene.replication(Duration::from_millis(1)).await {
                    assert_eq!(c, session.0);
                    tessera_sim::StatePacket::decode(&bytes).unwrap();
                    got += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got
        });
        let b = tool.wait_attached(session).await.unwrap();
        assert_eq!(b.scene, "coast", "attached in the portal's target scene");
        assert!(b.epoch >= 1);
        let packets = mover.await.unwrap();
        assert!(packets > 0, "replication reached the tool");

        tool.detach(session).await.unwrap();
        tool.close_session(session).await.unwrap();
        server.shutdown().await.unwrap();
        let stats = coord.stats();
        assert_eq!(stats.transfers, 1);
        assert_eq!(stats.batches_stale, 0);
        coord.shutdown().await;

        let store = Store::open(data.join(DB_FILE)).unwrap();
        let coast = store.scene_by_name("coast").unwrap().unwrap().id;
        let field = store.scene_by_name("field").unwrap().unwrap().id;
        assert_eq!(store.avatar(avatar).unwrap().unwrap().scene, coast);
        assert!(
            store
                .load_scene(field)
                .unwrap()
                .iter()
                .all(|s| s.avatar != avatar),
            "the avatar is in exactly one scene"
        );
        let st = store
            .load_scene(coast)
            .unwrap()
            .into_iter()
            .find(|s| s.avatar == avatar)
            .expect("saved in the coast");
        assert!(!st.online);
        assert!(
            (18.0..=60.0).contains(&st.position[0]) && (st.position[1] - 500.0).abs() < 1.0,
            "arrived at the coast's west edge, then ran on: {:?}",
            st.position
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_placements_and_epochs() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (account, avatar) = provision(&data, "town", [200.0, 200.0]);
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let addr = coord.link_addr().to_string();
        let a = scene_server(&addr, "scene-a").await;
        let b = scene_server(&addr, "scene-b").await;
        let before = until(10, "placement", || coord.status(), all_placed).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while a.placements().len() + b.placements().len() < defs().len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "servers never placed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let placements_a = a.placements();
        let placements_b = b.placements();
        assert_eq!(placements_a.len() + placements_b.len(), defs().len());

        let mut tool = SessionClient::connect(&addr, "gate-x", secret())
            .await
            .unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        tool.attach(session, avatar).await.unwrap();

        // The coordinator goes away and comes back on the same address.
        coord.shutdown().await;
        let coord = coordinator(&data, &addr).await;
        let after = until(
            10,
            "re-registration",
            || coord.status(),
            |s| all_placed(s) && s.scene_servers.iter().filter(|r| r.alive).count() == 2,
        )
        .await;
        let epochs = |s: &ClusterStatus| {
            s.scenes
                .iter()
                .map(|r| (r.name.clone(), r.server.clone(), r.epoch))
                .collect::<Vec<_>>()
        };
        assert_eq!(epochs(&before), epochs(&after), "same hosts, same epochs");
        // Past the grace period nothing moves, and no scene is hosted twice.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(epochs(&before), epochs(&coord.status()));
        assert_eq!(a.placements(), placements_a);
        assert_eq!(b.placements(), placements_b);
        for (scene, _) in a.placements() {
            assert!(b.placements().iter().all(|(s, _)| *s != scene));
        }
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        coord.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_moves_scenes_with_their_last_state() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (account, avatar) = provision(&data, "field", [500.0, 500.0]);
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let addr = coord.link_addr().to_string();
        let a = scene_server(&addr, "scene-a").await;
        until(10, "placement", || coord.status(), all_placed).await;
        let b = scene_server(&addr, "scene-b").await;

        let mut tool = SessionClient::connect(&addr, "tool-1", secret())
            .await
            .unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        let at = tool.attach(session, avatar).await.unwrap();
        assert_eq!(at.server, "scene-a");
        let scene = SceneClient::connect(&at.addr, "tool-1", secret())
            .await
            .unwrap();
        for seq in 1..=10 {
            let input = Input {
                seq,
                dir: [0.0, 1.0],
                ..Input::default()
            };
            scene
                .input("field", at.epoch, session.0, input)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SIGTERM path: flush, deregister; the scenes move to b under new epochs
        // and the avatar is attached there again, where it was.
        a.shutdown().await.unwrap();
        let moved = tool.wait_attached(session).await.unwrap();
        assert_eq!(moved.server, "scene-b");
        assert!(moved.epoch > at.epoch);
        tool.detach(session).await.unwrap();
        b.shutdown().await.unwrap();
        coord.shutdown().await;
        let store = Store::open(data.join(DB_FILE)).unwrap();
        let field = store.scene_by_name("field").unwrap().unwrap().id;
        let st = store
            .load_scene(field)
            .unwrap()
            .into_iter()
            .find(|s| s.avatar == avatar)
            .unwrap();
        assert!(
            st.position[1] > 501.0,
            "the movement on scene-a was flushed at its shutdown and carried to scene-b: {:?}",
            st.position
        );
    })
    .await
    .unwrap();
}
