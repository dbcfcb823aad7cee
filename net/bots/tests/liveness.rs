//! The coordinator's own stall expires no healthy node: it runs on a
//! runtime of its own, which the test blocks (as a stopped process or a
//! starved runtime would) for two heartbeat timeouts while a scene
//! server keeps beating.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tessera_coordinator::Coordinator;

mod common;
use common::*;

/// Starts a coordinator on a single-threaded runtime driven by its own
/// thread; returns it and a handle to run tasks on that runtime.
fn coordinator_on_own_runtime(
    data: &std::path::Path,
) -> (
    Coordinator,
    tokio::runtime::Handle,
    std::sync::mpsc::Sender<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (coord_tx, coord_rx) = std::sync::mpsc::channel();
    let data = data.to_path_buf();
    std::thread::spawn(move || {
        rt.block_on(async move {
            coord_tx
                .send(coordinator(&data, "127.0.0.1:0").await)
                .unwrap();
            // Drive the coordinator's tasks until the test ends.
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    });
    (coord_rx.recv().unwrap(), handle, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_stall_expires_no_healthy_node() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        provision(&data, "town", [200.0, 200.0]);
        let (coord, coord_rt, stop) = coordinator_on_own_runtime(&data);
        let server = scene_server(&coord.link_addr().to_string(), "scene-a").await;
        until(10, "placement", || coord.status(), all_placed).await;

        // Nothing of the coordinator runs for two heartbeat timeouts (less than
        // the links' idle timeout: the links themselves stay up).
        let timeout = cluster_config().heartbeat_timeout_ms;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        coord_rt.spawn(async move {
            std::thread::sleep(Duration::from_millis(2 * timeout));
            let _ = done_tx.send(());
        });
        done_rx.await.unwrap();

        // It notices its stall, and hears the server again; the server was
        // never declared down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while coord.stats().stalls == 0 {
            assert!(tokio::time::Instant::now() < deadline, "stall unnoticed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until(
            10,
            "the server alive",
            || coord.status(),
            |s| s.scene_servers.iter().all(|r| r.alive),
        )
        .await;
        let stats = coord.stats();
        assert_eq!((stats.nodes_down, stats.failovers), (0, 0), "{stats:?}");

        server.shutdown().await.unwrap();
        coord.shutdown().await;
        let _ = stop.send(());
    })
    .await
    .unwrap();
}
