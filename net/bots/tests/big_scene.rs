//! A scene with 100,000 resident avatars places: its saved states reach the
//! scene server in chunks, each far below the link's frame cap, where one
//! message with all of them (about 2.3 MB) could never be sent.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_bots::tool::SessionClient;
use tessera_coordinator::DB_FILE;
use tessera_persistence::{self as db, NewAvatar, Store};
use tessera_proto::AccountId;

mod common;
use common::*;

/// Resident avatars of the big scene.
const AVATARS: usize = 100_000;

/// `AVATARS` avatars of one account, each saved offline in `scene` at a
/// position derived from its index: two transactions, not 100,000 logins.
/// Returns the account and the avatar ids, in creation order.
fn provision_crowd(data: &Path, scene: &str) -> (u64, Vec<u64>) {
    std::fs::create_dir_all(data).unwrap();
    let store = Store::open(data.join(DB_FILE)).unwrap();
    let scene_id = store.ensure_scene(scene).unwrap();
    let account = store
        .register("crowd@example.com", "correct horse battery", None)
        .unwrap();
    let new: Vec<NewAvatar> = (0..AVATARS)
        .map(|i| NewAvatar {
            name: format!("Pc{i}"),
            figure: "f".into(),
            scene: scene_id,
        })
        .collect();
    let avatars = store.provision_avatars(account, &new).unwrap();
    let states = avatars
        .iter()
        .enumerate()
        .map(|(i, &avatar)| db::PcState {
            game: Vec::new(),
            avatar,
            scene: scene_id,
            position: position(i),
            heading: 0.0,
            action: 0,
            mount: 0,
            online: false,
            tick: 1,
        })
        .collect();
    let report = store
        .save_batch(&db::SaveBatch {
            objects: Vec::new(),
            scene: scene_id,
            states,
        })
        .unwrap();
    assert_eq!(report.written, AVATARS, "{report:?}");
    (account, avatars)
}

/// Where avatar number `i` was saved (inside every scene's bounds).
fn position(i: usize) -> [f32; 2] {
    [10.0 + (i % 300) as f32, 10.0 + (i / 300 % 300) as f32]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_with_100k_resident_avatars_places() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (account, avatars) = provision_crowd(&data, "town");

        // What the coordinator reads for the placement (figure only).
        let read = {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            let town = store.scene_by_name("town").unwrap().unwrap().id;
            let t = Instant::now();
            assert_eq!(store.load_scene(town).unwrap().len(), AVATARS);
            t.elapsed()
        };

        let started = Instant::now();
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let server = scene_server(&coord.link_addr().to_string(), "scene-a").await;
        // Placed, running, and holding every saved state as an offline avatar.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let others = defs().len() - 1;
        let mut others_at = None;
        loop {
            let load = server.load();
            if others_at.is_none() && load.iter().filter(|l| l.scene != "town").count() == others {
                others_at = Some(started.elapsed());
            }
            let town = load.into_iter().find(|l| l.scene == "town");
            if let Some(l) = town
                && l.offline as usize == AVATARS
                && coord
                    .status()
                    .scenes
                    .iter()
                    .any(|s| s.name == "town" && s.server == "scene-a")
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "town with {AVATARS} avatars not placed: {:?}, {:?}",
                server.load(),
                coord.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Not timed assertions: the figures for BENCHMARKS.md.
        println!(
            "town with {AVATARS} resident avatars running {:.3} s after the coordinator \
             started (the {others} empty scenes: {:.3} s); load_scene alone: {:.3} s",
            started.elapsed().as_secs_f64(),
            others_at.unwrap_or_default().as_secs_f64(),
            read.as_secs_f64()
        );
        // Placed once: no retry burnt an epoch.
        assert_eq!(coord.stats().placements_refused, 0);
        assert_eq!(
            server
                .placements()
                .iter()
                .find(|(s, _)| s == "town")
                .map(|p| p.1),
            Some(1),
            "town placed more than once"
        );

        // The last avatar's state came in the last chunk: attached and
        // detached without moving, it is saved where it was.
        let last = *avatars.last().unwrap();
        let mut tool = SessionClient::connect(&coord.link_addr().to_string(), "tool-1", secret())
            .await
            .unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        let a = tool.attach(session, last).await.unwrap();
        assert_eq!((a.scene.as_str(), a.epoch), ("town", 1));
        tool.detach(session).await.unwrap();
        tool.close_session(session).await.unwrap();

        server.shutdown().await.unwrap();
        coord.shutdown().await;

        let store = Store::open(data.join(DB_FILE)).unwrap();
        let town = store.scene_by_name("town").unwrap().unwrap().id;
        let saved = store.load_scene(town).unwrap();
        assert_eq!(saved.len(), AVATARS);
        let st = saved.iter().find(|s| s.avatar == last).unwrap();
        assert_eq!(st.position, position(AVATARS - 1), "{st:?}");
        assert!(st.tick > 1, "saved by the detach: {st:?}");
    })
    .await
    .unwrap();
}
