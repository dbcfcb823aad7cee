//! A placement's saved states, streamed to its scene server by a task of
//! their own after the core queued the `PlaceScene` announcement: each
//! `SceneStates` chunk is built only once the one before is queued, and
//! waits for room in the link's queue. So a scene of any size places, the
//! lock is not held while it goes out, and the link's queue holds at most
//! its byte budget of it.
//!
//! Messages the core sends meanwhile may overtake the chunks; the scene
//! server's assembly is built for that: attach messages for the placement
//! are held until it is whole, a drop or a stale epoch forgets it (its
//! late chunks are then ignored), and a newer placement supersedes it.

use tessera_link::LinkSender;
use tessera_wire::PlacementMsgs;
use tracing::{debug, warn};

/// Queues the chunks left in `msgs` on `sender` in order, each waiting for
/// room. Stops when the link closes (the scene server drops what it
/// assembled, and the coordinator places the scene again).
pub(super) async fn stream_chunks(sender: LinkSender, msgs: PlacementMsgs) {
    let (chunks, states) = (msgs.chunks(), msgs.states());
    for (i, msg) in msgs.enumerate() {
        if let Err(e) = sender.send(&msg).await {
            warn!(
                node = %sender.peer().node,
                sent = i,
                chunks,
                error = %e,
                "placement cut short"
            );
            return;
        }
    }
    debug!(node = %sender.peer().node, chunks, states, "placement sent");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tessera_link::{Link, LinkConfig, LinkMsg, Role, connect, serve};
    use tessera_wire::WirePcState;

    use super::*;

    /// A placement many times the link's queue (256 KiB here) arrives
    /// whole and in order: each chunk waits for room instead of being
    /// dropped.
    #[tokio::test]
    async fn a_placement_larger_than_the_link_queue_arrives_whole() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let small = |role, node: &str| {
                let mut cfg = LinkConfig::new(role, node, "placement-stream-test-secret");
                cfg.max_frame = 256 << 10;
                cfg.send_queue_bytes = 256 << 10;
                cfg.recv_queue_bytes = 256 << 10;
                cfg.send_queue = 4;
                cfg.recv_queue = 4;
                cfg
            };
            let (listener, addr) = tessera_link::bind("127.0.0.1:0").await.expect("bind");
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Link>(1);
            let stop = tokio_util::sync::CancellationToken::new();
            let server = tokio::spawn(serve(
                listener,
                small(Role::SceneServer, "scene-a"),
                move |link| {
                    let _ = tx.try_send(link);
                    async {}
                },
                {
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                },
            ));
            let link = connect(&addr.to_string(), &small(Role::Coordinator, "coordinator"))
                .await
                .expect("connect");
            let mut scene_server = rx.recv().await.expect("link");

            let n = 100_000u64;
            let states: Vec<WirePcState> = (0..n)
                .map(|avatar| WirePcState {
                    avatar,
                    tick: avatar * 7,
                    position: [avatar as f32, 1.0],
                    ..WirePcState::default()
                })
                .collect();
            let mut msgs = PlacementMsgs::new("town".into(), 3, states).expect("split");
            let chunks = msgs.chunks();
            // The core queues the announcement itself.
            assert!(matches!(msgs.next(), Some(LinkMsg::PlaceScene { .. })));
            let sending = tokio::spawn(stream_chunks(link.sender(), msgs));

            let mut got = Vec::new();
            let mut bytes = 0;
            for want in 0..chunks {
                match scene_server.recv().await {
                    Some(m @ LinkMsg::SceneStates { .. }) => {
                        bytes += m.encode().len();
                        let LinkMsg::SceneStates { seq, states, .. } = m else {
                            unreachable!()
                        };
                        assert_eq!(seq, want);
                        got.extend(states.iter().map(|s| (s.avatar, s.tick)));
                    }
                    other => panic!("chunk {want}: {other:?}"),
                }
            }
            sending.await.expect("stream task");
            assert!(bytes > 4 * (256 << 10), "only {bytes} bytes: not a test");
            assert_eq!(got, (0..n).map(|a| (a, a * 7)).collect::<Vec<_>>());

            drop(link);
            stop.cancel();
            server.await.expect("serve task").expect("serve");
        })
        .await
        .expect("in time");
    }
}
