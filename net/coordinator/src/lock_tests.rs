//! The shared lock: how long it is held is measured, and the disk never
//! holds it — a request that needs only the lock is answered while a
//! durable write waits on a stuck disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tessera_cluster::{ClusterConfig, ClusterStatus};
use tessera_link::LinkConfig;
use tessera_wire::{LinkMsg, Register, Role, Secret};

use crate::{AdminToken, Coordinator, CoordinatorConfig};

const SECRET: &str = "lock-test-cluster-secret";

async fn start(data: &std::path::Path) -> Coordinator {
    let config = CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        admin_token: AdminToken::new("lock-test-admin-token"),
        data: data.to_path_buf(),
        ..CoordinatorConfig::default()
    };
    // No heartbeats in these tests: a long timeout keeps the node alive.
    let cluster = ClusterConfig {
        heartbeat_timeout_ms: 60_000,
        ..ClusterConfig::default()
    };
    Coordinator::start(config, cluster, Secret::new(SECRET), vec!["field".into()])
        .await
        .unwrap()
}

/// `/v1/status` as a request that needs only the lock: taken on a thread
/// of its own, and given up (an error) if it does not come back in 10 s.
/// Waited for without the runtime, whose workers a lock held across the
/// disk would block too.
fn status(coord: &Coordinator) -> Result<ClusterStatus, &'static str> {
    let core = Arc::clone(&coord.core);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(core.lock().status()));
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the status waited on the lock behind the disk")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hold_of_the_lock_is_measured() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let coord = start(dir.path()).await;
        let count = || {
            tessera_metrics::read_sample(
                &coord.metrics().render(),
                "tessera_coordinator_lock_hold_seconds_count",
            )
            .expect("the lock's hold-time histogram is exposed")
        };
        let before = count();
        for _ in 0..3 {
            coord.status();
        }
        // Three holds, and the scrape's own copy of the figures (at least).
        assert!(count() >= before + 3.0, "{} then {}", before, count());
        coord.shutdown().await;
    })
    .await
    .unwrap();
}

/// A scene server registers while the disk is stuck (its write lock held):
/// the placement's epoch cannot be stored, so nothing is sent — yet the
/// lock is free all along. Once the disk moves, the placement goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_disk_does_not_hold_the_lock() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let coord = start(dir.path()).await;

        // The disk sticks: a write transaction held on a thread of its own.
        let store = Arc::clone(coord.core.lock().store());
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let hold = store.hold_writes().unwrap();
            held_tx.send(()).unwrap();
            // Until released, or until the test gives up (the sender drops).
            let _ = release_rx.recv();
            drop(hold);
        });
        held_rx.await.unwrap();

        let cfg = LinkConfig::new(Role::SceneServer, "stuck-disk-server", Secret::new(SECRET));
        let mut link = tessera_link::connect(&coord.link_addr().to_string(), &cfg)
            .await
            .unwrap();
        link.send(&LinkMsg::Register(Register {
            addr: "127.0.0.1:1".into(),
            capacity: 0,
            hosted: vec![],
            game: String::new(),
        }))
        .await
        .unwrap();

        // The placement is decided (epoch 1) while its epoch waits for the
        // disk; the status is answered throughout. (Nothing here waits on
        // the runtime: with the lock held across the disk, its workers
        // block on the lock too.)
        loop {
            let s = status(&coord).unwrap();
            if s.scenes.iter().any(|r| r.name == "field" && r.epoch >= 1) {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..5 {
            status(&coord).unwrap();
        }
        assert_eq!(
            coord.stats().placements,
            0,
            "placed before the epoch was stored"
        );

        release_tx.send(()).unwrap();
        holder.join().unwrap();
        loop {
            match link.recv().await {
                Some(LinkMsg::PlaceScene { scene, epoch, .. }) => {
                    assert_eq!((scene.as_str(), epoch), ("field", 1));
                    break;
                }
                Some(_) => {}
                None => panic!("the link closed before the placement came"),
            }
        }
        assert_eq!(coord.stats().persist_errors, 0);
        coord.shutdown().await;
    })
    .await
    .unwrap();
}

/// Behind a disk job that never ends, the backlog of effects is bounded:
/// past it a batch is dropped and counted, and the lock stays free.
#[test]
fn effects_waiting_on_the_disk_are_bounded_and_drops_counted() {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use tessera_cluster::{ClusterState, Effect, NodeId};
    use tessera_persistence::{Store, Writer, WriterConfig};

    use crate::core::{Core, io::MAX_BACKLOG_BATCHES};
    use crate::login::{LoginConfig, Logins};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("t.redb")).unwrap());
    let writer = Writer::spawn(Arc::clone(&store), WriterConfig::default(), |_| {}).unwrap();
    let logins = Logins::new(
        LoginConfig::default(),
        Secret::new(SECRET).derive_key("netcode"),
    )
    .unwrap();
    let cluster = ClusterState::new(ClusterConfig::default(), 0).unwrap();
    // No data thread: the first disk job waits for ever.
    let mut core = Core::new(
        cluster,
        Instant::now(),
        store,
        writer,
        BTreeMap::new(),
        500,
        100,
        logins,
    );
    core.apply(vec![Effect::PersistEpoch {
        scene: "field".into(),
        epoch: 1,
    }]);
    let down = || vec![Effect::NodeDown { node: NodeId(7) }];
    for _ in 1..MAX_BACKLOG_BATCHES {
        core.apply(down());
    }
    assert_eq!(core.backlog_len(), MAX_BACKLOG_BATCHES - 1);
    assert_eq!(core.stats().effects_dropped, 0);
    core.apply(down());
    assert_eq!(core.stats().effects_dropped, 1);
    assert_eq!(core.stats().nodes_down, 0, "nothing overtook the disk job");
    drop(core.close());
}
