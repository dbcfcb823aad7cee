//! A game's persistent state across the cluster, in one process over
//! loopback: a coordinator and a scene server running a small game whose
//! `Hp` is registered persistent (`tessera_sim::testing::hp_game`). A PC's
//! `Hp` survives a logout and login and a portal; the scene's shrine keeps
//! its `Hp` when the cluster restarts on the same data directory.
//!
//! What is checked is what lands in the database once the cluster is shut
//! down (its final flush saves every PC and object as the world holds it):
//! a lost value would come back as the game's default and be saved so.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_bots::tool::{Attachment, SceneClient, SessionClient};
use tessera_coordinator::{Coordinator, DB_FILE};
use tessera_persistence::{GameField, Store};
use tessera_proto::{AccountId, SessionId};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::testing::hp_game::{HpTestGame, SHRINE_KEY};
use tessera_wire::{Input, MoveMode};

mod common;
use common::*;

/// 16 units east of `field`'s west portal (to `town`).
const START: [f32; 2] = [20.0, 500.0];
const TOOL: &str = "tool-1";

async fn game_server(coord: &str) -> SceneServer {
    let cfg = SceneServerConfig {
        coordinator: coord.into(),
        name: "scene-a".into(),
        heartbeat_ms: 200,
        ..SceneServerConfig::default()
    };
    SceneServer::start(cfg, secret(), defs(), Arc::new(HpTestGame))
        .await
        .unwrap()
}

/// Waits (at most `secs`) until `ok` holds.
async fn eventually(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends inputs with `action` (and `dir`) for a while, then waits until a
/// save batch sent after the first one is acknowledged: the action was
/// applied and what it changed is durable.
async fn act(
    server: &SceneServer,
    scene: &SceneClient,
    at: &Attachment,
    session: SessionId,
    seq: &mut u32,
    action: u8,
) {
    let before = server.stats().sink.batches_sent;
    for _ in 0..20 {
        *seq += 1;
        let input = Input {
            seq: *seq,
            action,
            ..Input::default()
        };
        scene
            .input(&at.scene, at.epoch, session.0, input)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(20, "the change to be saved", || {
        let s = server.stats().sink;
        s.batches_sent > before && s.batches_acked == s.batches_sent
    })
    .await;
}

fn hp(game: &[GameField]) -> Option<u8> {
    match game {
        [f] if f.name == "hp" && f.version == 1 && f.bytes.len() == 1 => Some(f.bytes[0]),
        _ => None,
    }
}

/// The avatar's saved `Hp` in `scene`, and the shrine's in `field`.
fn saved(data: &Path, scene: &str, avatar: u64) -> (Option<u8>, Option<u8>) {
    let store = Store::open_existing(data.join(DB_FILE)).unwrap();
    let id = store.scene_by_name(scene).unwrap().unwrap().id;
    let pc = store
        .load_scene(id)
        .unwrap()
        .into_iter()
        .find(|s| s.avatar == avatar)
        .and_then(|s| hp(&s.game));
    let field = store.scene_by_name("field").unwrap().unwrap().id;
    let shrine = store
        .load_scene_objects(field)
        .unwrap()
        .into_iter()
        .find(|o| o.key == SHRINE_KEY)
        .and_then(|o| hp(&o.game));
    (pc, shrine)
}

async fn start(data: &Path) -> (Coordinator, SceneServer, String) {
    let coord = coordinator(data, "127.0.0.1:0").await;
    let addr = coord.link_addr().to_string();
    let server = game_server(&addr).await;
    until(10, "placement", || coord.status(), all_placed).await;
    (coord, server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_state_survives_logout_portal_and_restart() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (account, avatar) = provision(&data, "field", START);

        let (coord, server, addr) = start(&data).await;
        let mut tool = SessionClient::connect(&addr, TOOL, secret()).await.unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        let at = tool.attach(session, avatar).await.unwrap();
        assert_eq!(at.scene, "field");
        let scene = SceneClient::connect(&at.addr, TOOL, secret())
            .await
            .unwrap();
        let mut seq = 0;
        // The shrine to 50, the PC to 42, then a neutral action (the
        // action itself is saved with the PC and must not redo it).
        act(&server, &scene, &at, session, &mut seq, 150).await;
        act(&server, &scene, &at, session, &mut seq, 42).await;
        act(&server, &scene, &at, session, &mut seq, 0).await;

        // Logout and login: the PC comes back with its Hp.
        tool.detach(session).await.unwrap();
        let at = tool.attach(session, avatar).await.unwrap();
        assert_eq!(at.scene, "field");

        // Run west into the portal to town.
        let (field_scene, epoch) = (at.scene.clone(), at.epoch);
        let runner = tokio::spawn(async move {
            for _ in 0..200 {
                seq += 1;
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
        let arrived = tool.wait_attached(session).await.unwrap();
        assert_eq!(arrived.scene, "town");
        runner.abort();

        tool.close_session(session).await.unwrap();
        server.shutdown().await.unwrap();
        coord.shutdown().await;
        assert_eq!(
            saved(&data, "town", avatar),
            (Some(42), Some(50)),
            "the PC's Hp through logout, login and the portal; the shrine's"
        );

        // The cluster again on the same data: the shrine is restored
        // (else the game's default would be saved over it).
        let (coord, server, _) = start(&data).await;
        // Long enough for its first flush: a shrine not restored would be
        // saved then (and at the final flush) with the game's default.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.shutdown().await.unwrap();
        coord.shutdown().await;
        assert_eq!(saved(&data, "town", avatar), (Some(42), Some(50)));
    })
    .await
    .unwrap();
}
