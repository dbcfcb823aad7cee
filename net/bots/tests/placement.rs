//! A placement whose saved states cannot be read is refused, never made
//! empty: players' real positions must not be overwritten by the ones they
//! would get in an empty scene.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tessera_coordinator::DB_FILE;
use tessera_persistence::{Store, schema::PC_STATES};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_whose_states_do_not_load_is_not_placed_empty() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (_, avatar) = provision(&data, "town", [200.0, 200.0]);
        let town = {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            store.scene_by_name("town").unwrap().unwrap().id
        };
        // One undecodable record among the town's states.
        {
            let db = redb::Database::open(data.join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(PC_STATES)
                .unwrap()
                .insert((town, avatar + 1), &[0xff_u8, 0xff][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let server = scene_server(&coord.link_addr().to_string(), "scene-a").await;

        // Refused, then tried again (with a new epoch) after the heartbeat
        // timeout, and refused again: never placed empty meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while coord.stats().placements_refused < 2 {
            assert!(
                server.placements().iter().all(|(s, _)| s != "town"),
                "town placed without its states"
            );
            assert!(tokio::time::Instant::now() < deadline, "no second refusal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(server.placements().iter().all(|(s, _)| s != "town"));
        // The other scenes are placed as usual.
        let others = defs().len() - 1;
        while server.placements().len() < others {
            assert!(tokio::time::Instant::now() < deadline, "others not placed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        server.shutdown().await.unwrap();
        coord.shutdown().await;
        let store = Store::open(data.join(DB_FILE)).unwrap();
        assert!(store.load_scene(town).is_err(), "the record is still there");
    })
    .await
    .unwrap();
}
