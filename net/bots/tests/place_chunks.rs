//! A scene server assembling a placement's chunks, driven by a scripted
//! coordinator: while the states arrive its heartbeats list the scene as
//! loading, a newer placement supersedes an unfinished one (whose late
//! chunk changes nothing), an attach that overtakes the chunks waits for
//! them, and a placement missing a chunk is dropped.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tessera_link::{Link, LinkConfig, Role, serve};
use tessera_proto::SessionId;
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_wire::{Epoch, LinkMsg, WireEvent, WirePcState};

mod common;
use common::*;

fn states(from: u64, n: u64) -> Vec<WirePcState> {
    (from..from + n)
        .map(|avatar| WirePcState {
            avatar,
            position: [100.0, 100.0],
            ..WirePcState::default()
        })
        .collect()
}

/// The scripted coordinator's side of the scene server's link.
struct Script {
    link: Link,
    /// Every `SceneReady` seen.
    ready: Vec<(String, Epoch)>,
    /// Every avatar the scene server reported attached, with its placement.
    attached: Vec<(String, Epoch, u64)>,
}

impl Script {
    async fn send(&self, msg: LinkMsg) {
        self.link.send(&msg).await.unwrap();
    }

    /// Reads until a heartbeat for which `ok` holds (what it lists), noting
    /// every `SceneReady` on the way.
    async fn heartbeat_until(&mut self, what: &str, ok: impl Fn(&[(String, Epoch)]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.link.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            match msg {
                LinkMsg::Heartbeat(hb) => {
                    let listed: Vec<(String, Epoch)> =
                        hb.scenes.into_iter().map(|l| (l.scene, l.epoch)).collect();
                    if ok(&listed) {
                        return;
                    }
                }
                LinkMsg::SceneReady { scene, epoch } => self.ready.push((scene, epoch)),
                LinkMsg::Event {
                    scene,
                    epoch,
                    event: WireEvent::Attached { avatar, .. },
                } => self.attached.push((scene, epoch, avatar)),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_server_assembles_chunks_and_drops_what_cannot_complete() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (listener, addr) = tessera_link::bind("127.0.0.1:0").await.unwrap();
        let (links_tx, mut links_rx) = tokio::sync::mpsc::channel::<Link>(1);
        let stop = tokio_util::sync::CancellationToken::new();
        let cfg = LinkConfig::new(Role::Coordinator, "coordinator", secret());
        let served = tokio::spawn(serve(
            listener,
            cfg,
            // Only the first link is scripted; a reconnect is dropped.
            move |link| {
                let _ = links_tx.try_send(link);
                async {}
            },
            {
                let stop = stop.clone();
                async move { stop.cancelled().await }
            },
        ));
        let server = SceneServer::start(
            SceneServerConfig {
                coordinator: addr.to_string(),
                name: "scene-a".into(),
                heartbeat_ms: 50,
                metrics: Some("127.0.0.1:0".into()),
                ..SceneServerConfig::default()
            },
            secret(),
            defs(),
            std::sync::Arc::new(tessera_sim::DefaultGame),
        )
        .await
        .unwrap();
        let mut link = links_rx.recv().await.unwrap();
        assert!(matches!(link.recv().await, Some(LinkMsg::Register(_))));
        let mut c = Script {
            link,
            ready: Vec::new(),
            attached: Vec::new(),
        };
        c.send(LinkMsg::Registered { heartbeat_ms: 50 }).await;

        // Half of town's states at epoch 1: listed as loading, not placed.
        let town = |e| ("town".to_owned(), e);
        c.send(place("town", 1, 2, 5)).await;
        c.send(chunk("town", 1, 0, states(0, 3))).await;
        c.heartbeat_until("town listed while loading", |l| l.contains(&town(1)))
            .await;
        assert!(server.placements().is_empty());
        let probes = server.metrics_addr().unwrap();
        let (status, body) = readyz(probes).await;
        assert!(
            status.contains("503") && body.contains("town"),
            "{status} {body}"
        );

        // A newer placement supersedes it; the old epoch's last chunk
        // completes nothing. An attach that overtakes the new placement's
        // chunk (the coordinator streams them) waits for it.
        c.send(place("town", 2, 1, 2)).await;
        c.send(LinkMsg::AttachAt {
            scene: "town".into(),
            epoch: 2,
            session: SessionId(1 << 63 | 7),
            avatar: 11,
            gate: "gate-1".into(),
            state: None,
        })
        .await;
        c.send(chunk("town", 1, 1, states(3, 2))).await;
        c.send(chunk("town", 2, 0, states(10, 2))).await;
        c.heartbeat_until("town running at epoch 2", |l| l == [town(2)])
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while c.attached.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "held attach lost");
            c.heartbeat_until("a heartbeat", |_| true).await;
        }
        assert_eq!(c.attached, vec![("town".to_owned(), 2, 11)]);
        let (status, body) = readyz(probes).await;
        assert!(status.contains("200"), "{status} {body}");
        let load = server.load();
        assert_eq!(load.len(), 1);
        assert_eq!((load[0].epoch, load[0].offline), (2, 2), "{load:?}");

        // A gap: field's placement is dropped and no longer listed.
        c.send(place("field", 1, 2, 2)).await;
        c.send(chunk("field", 1, 1, states(20, 1))).await;
        c.heartbeat_until("field not listed", |l| l == [town(2)])
            .await;
        // Its first chunk, late, belongs to no placement any more.
        c.send(chunk("field", 1, 0, states(21, 1))).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.stats().assembly.stray == 0 {
            assert!(tokio::time::Instant::now() < deadline, "late chunk unseen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let stats = server.stats().assembly;
        assert_eq!(
            (
                stats.started,
                stats.completed,
                stats.superseded,
                stats.wrong_epoch,
                stats.missing,
                stats.stray,
                stats.held
            ),
            (3, 1, 1, 1, 1, 1, 1),
            "{stats:?}"
        );
        assert_eq!(server.placements(), vec![town(2)]);
        assert!(c.ready.iter().all(|r| *r == town(2)), "{:?}", c.ready);

        drop(c);
        stop.cancel();
        served.await.unwrap().unwrap();
        server.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

/// `GET /readyz`: the status line and the body.
async fn readyz(addr: std::net::SocketAddr) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply.lines().next().unwrap_or_default().to_owned();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

fn place(scene: &str, epoch: Epoch, chunks: u32, states: u32) -> LinkMsg {
    LinkMsg::PlaceScene {
        objects: Vec::new(),
        scene: scene.into(),
        epoch,
        chunks,
        states,
    }
}

fn chunk(scene: &str, epoch: Epoch, seq: u32, states: Vec<WirePcState>) -> LinkMsg {
    LinkMsg::SceneStates {
        scene: scene.into(),
        epoch,
        seq,
        states,
    }
}
