//! Saves acknowledged end to end, in one process over loopback: a scene
//! server keeps what it saved until the coordinator has it on disk.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tessera_bots::tool::SessionClient;
use tessera_proto::AccountId;

mod common;
use common::*;

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

/// A detach saves the avatar; the batch goes to the coordinator, whose
/// writer commits it, and only then does the scene server forget it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_server_forgets_saves_only_once_they_are_durable() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (account, avatar) = provision(&data, "town", [200.0, 200.0]);
        let coord = coordinator(&data, "127.0.0.1:0").await;
        let addr = coord.link_addr().to_string();
        let server = scene_server(&addr, "scene-a").await;
        until(10, "placement", || coord.status(), all_placed).await;

        let mut tool = SessionClient::connect(&addr, "tool-1", secret())
            .await
            .unwrap();
        let session = tool.open_session(AccountId(account)).await.unwrap();
        tool.attach(session, avatar).await.unwrap();
        tool.detach(session).await.unwrap();

        eventually(20, "the saves to be acknowledged", || {
            let sink = server.stats().sink;
            sink.batches_sent > 0 && sink.batches_acked == sink.batches_sent
        })
        .await;
        let sink = server.stats().sink;
        assert_eq!(sink.unacked_states, 0, "{sink:?}");
        assert!(coord.stats().save_acks > 0);
        let writer = coord.stats();
        assert_eq!(writer.save_acks_dropped, 0);

        tool.close_session(session).await.unwrap();
        server.shutdown().await.unwrap();
        coord.shutdown().await;
    })
    .await
    .unwrap();
}
